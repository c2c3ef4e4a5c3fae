"""Model extraction on split federated learning: the split recomposes the model exactly, the oracle's
gradient is autograd's dCE/dz row by row, every gradient row is counted and the budget is never passed,
the oracle shows nothing of the server's weights, an SFL step is a step of plain training, and the
paper's claims hold at small scale on `mnist5k` with `small_cnn` cut after conv2 (docs/split-learning.md)."""

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.extraction.sfl import (
    GANME,
    GMME,
    CraftME,
    SoftTrainME,
    SplitExtractionAttack,
    SplitFed,
    SplitModel,
    SplitOracle,
    TrainME,
    count_layers,
    soft_labels,
    split_model,
)
from bastion.core import ATTACKS, ConfigError, DataError, QueryBudgetExceeded
from bastion.core.errors import ModelError
from bastion.data import Dataset
from bastion.data.ood import synthetic_set
from bastion.models import build_model
from bastion.models.checkpoint import load_checkpoint

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
DIGITS = (1, 8, 8)

# Cheap settings per attack on the 8x8 digits (a second or two each).
CHEAP = {
    "craft-me": {"budget": 130, "craft_steps": 3},  # 4 images per class, 3 steps: 120 rows
    "gan-me": {"budget": 250, "latent": 8, "ngf": 4, "query_batch": 20, "gen_batches": 2},  # 12 steps: 240
    "gm-me": {"budget": 205, "query_batch": 7},  # 20 images x 10 labels: 200
    "train-me": {"budget": 0},
    "softtrain-me": {"budget": 155, "query_batch": 4},  # 15 images x 10 labels: 150
}
PLANNED = {"craft-me": 120, "gan-me": 240, "gm-me": 200, "train-me": 0, "softtrain-me": 150}


def test_every_registered_split_attack_is_tested() -> None:
    assert set(ATTACKS.names("split-extraction")) == set(CHEAP)


@pytest.fixture
def digits_split(digits_model: nn.Module) -> SplitModel:
    return split_model(copy.deepcopy(digits_model), 3, DIGITS)


def test_split_recomposes_the_model_exactly(mnist_model: nn.Module, mnist_data: Dataset) -> None:
    x = mnist_data.x_test[:50]
    with torch.no_grad():
        full = mnist_model(x)
        assert count_layers(mnist_model) == 6
        for n_s in range(1, 6):
            sp = split_model(mnist_model, n_s, (1, 28, 28))
            assert torch.equal(sp.server(sp.client(x)), full) and torch.equal(sp.whole()(x), full)
            assert sp.server_layers == n_s and sp.total_layers == 6 and sp.num_classes == 10
    sp = split_model(mnist_model, 3, (1, 28, 28))  # cut after conv2 (and its ReLU)
    assert [type(m).__name__ for m in sp.server] == ["MaxPool2d", "Flatten", "Linear", "ReLU", "Linear"]
    assert type(sp.client[-2]).__name__ == "Conv2d" and sp.z_shape == (64, 14, 14)
    assert sp.server[2] is mnist_model.fc1  # the same modules: nothing copied


def test_split_counts_nested_layers_and_refuses_what_it_cannot_cut() -> None:
    vgg = build_model("vgg11_bn", num_classes=10, in_channels=3, image_size=32)
    assert count_layers(vgg) == 14  # 8 conv, 5 max-pool, 1 linear
    sp = split_model(vgg, 6, (3, 32, 32))
    x = torch.rand(2, 3, 32, 32)
    vgg.eval()
    with torch.no_grad():
        assert torch.equal(sp.server(sp.client(x)), vgg(x))
    with pytest.raises(ConfigError, match="server_layers"):
        split_model(vgg, 14, (3, 32, 32))
    with pytest.raises(ModelError, match="sequential"):
        split_model(_Residual(), 1, (3, 32, 32))
    resnet = build_model("resnet20", num_classes=10)  # sequential around opaque residual blocks
    assert count_layers(resnet) == 2


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x)


def test_oracle_gradient_is_autograds_row_by_row() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 7), nn.Tanh(), nn.Linear(7, 4))
    sp = split_model(model, 2, (1, 4, 4))  # the flatten belongs to the conv: z is (12,)
    assert sp.z_shape == (12,) and len(sp.server) == 3
    z, y = torch.randn(5, 12), torch.tensor([0, 3, 1, 1, 2])
    g = SplitOracle.offline(sp, budget=None).grad(z, y)
    assert all(p.grad is None for p in model.parameters())  # the weights receive nothing
    for i in range(5):  # one row at a time, by hand: dCE/dz = J^T (softmax - onehot)
        zi = z[i : i + 1].clone().requires_grad_(True)
        F.cross_entropy(sp.server(zi), y[i : i + 1]).backward()
        assert zi.grad is not None and torch.allclose(g[i], zi.grad[0], atol=1e-6)
    h = sp.server[0](z)
    delta = F.softmax(sp.server[2](torch.tanh(h)), 1) - F.one_hot(y, 4)  # (5, 4)
    manual = ((delta @ sp.server[2].weight) * (1 - torch.tanh(h) ** 2)) @ sp.server[0].weight
    assert torch.allclose(g, manual, atol=1e-6)


def test_oracle_counts_every_row_and_never_passes_its_budget(digits_split: SplitModel) -> None:
    oracle = SplitOracle.offline(digits_split, budget=10)
    z = torch.randn(6, *digits_split.z_shape)
    oracle.grad(z, torch.zeros(6, dtype=torch.long))
    assert oracle.queries == 6 and oracle.remaining == 4
    with pytest.raises(QueryBudgetExceeded, match="6 of the budget of 10"):
        oracle.grad(torch.randn(5, *digits_split.z_shape), torch.zeros(5, dtype=torch.long))
    assert oracle.queries == 6  # nothing answered, nothing counted
    oracle.grad(z[:4], torch.ones(4, dtype=torch.long))
    assert oracle.queries == 10 and oracle.remaining == 0
    with pytest.raises(QueryBudgetExceeded):
        oracle.grad(z[:1], torch.ones(1, dtype=torch.long))
    with pytest.raises(DataError, match="labels must lie"):
        SplitOracle.offline(digits_split, budget=None).grad(z[:1], torch.tensor([10]))
    with pytest.raises(DataError, match="activations must have shape"):
        SplitOracle.offline(digits_split, budget=None).grad(torch.randn(2, 5), torch.zeros(2, dtype=torch.long))


def _reachable(obj: object, depth: int = 3) -> list[object]:
    """Everything reachable from `obj` through public attributes (names not starting with "_")."""
    found, frontier = [], [obj]
    for _ in range(depth):
        nxt = []
        for o in frontier:
            for name in dir(o):
                if name.startswith("_"):
                    continue
                value = getattr(o, name)
                found.append(value)
                if not callable(value) and not isinstance(value, int | float | str | bool | tuple | type(None)):
                    nxt.append(value)
        frontier = nxt
    return found


def test_the_oracle_never_reveals_the_server(digits_split: SplitModel, digits_data: Dataset) -> None:
    fed = SplitFed(copy.deepcopy(digits_split.whole()), server_layers=3, input_shape=DIGITS,
                   clients=[(digits_data.x_train[:64], digits_data.y_train[:64])])  # fmt: skip
    for oracle in (SplitOracle.offline(digits_split, budget=100), fed.oracle(budget=100)):
        assert not hasattr(oracle, "__dict__")  # slots only: no attribute can be added or found there
        for value in _reachable(oracle):
            assert not isinstance(value, nn.Module | Tensor), type(value)
        assert {n for n in dir(oracle) if not n.startswith("_")} == {
            "budget", "grad", "mode", "num_classes", "offline", "queries", "remaining", "z_shape"
        }  # fmt: skip
    # an offline oracle answers from its own frozen copy: the caller's later edits do not reach it
    oracle = SplitOracle.offline(digits_split, budget=None)
    z, y = torch.randn(3, *digits_split.z_shape), torch.tensor([1, 2, 3])
    before = oracle.grad(z, y)
    with torch.no_grad():
        digits_split.server[-1].weight.add_(1.0)
    assert torch.equal(oracle.grad(z, y), before)


def test_an_sfl_step_is_a_step_of_plain_training(digits_data: Dataset) -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    plain = copy.deepcopy(model)
    x, y = digits_data.x_train[:32], digits_data.y_train[:32]
    fed = SplitFed(model, server_layers=3, input_shape=DIGITS, clients=[(x, y)], lr=0.1, batch_size=32)
    fed.train(1)  # one client, one batch: one step, then FedAvg of a single client
    opt = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    F.cross_entropy(plain(x), y).backward()
    opt.step()
    for (name, a), b in zip(model.named_parameters(), plain.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_sfl_trains_and_the_online_server_keeps_changing(digits_data: Dataset) -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    n = digits_data.x_train.shape[0] // 3
    clients = [(digits_data.x_train[i * n : (i + 1) * n], digits_data.y_train[i * n : (i + 1) * n]) for i in range(3)]
    fed = SplitFed(model, server_layers=3, input_shape=DIGITS, clients=clients, lr=0.05, batch_size=32)
    fed.train(3)
    assert fed.rounds == 3
    assert float((fed.split.predict(digits_data.x_test) == digits_data.y_test).double().mean()) > 0.8
    oracle = fed.oracle(budget=40, honest_steps=2)
    weights = [p.detach().clone() for p in fed.split.server.parameters()]
    steps = fed.steps
    z = torch.randn(20, *fed.split.z_shape)
    g1 = oracle.grad(z, torch.zeros(20, dtype=torch.long))
    g2 = oracle.grad(z, torch.zeros(20, dtype=torch.long))
    assert oracle.mode == "online" and oracle.queries == 40 and fed.steps == steps + 4
    assert not torch.equal(g1, g2)  # the server trained in between
    assert any(not torch.equal(a, b) for a, b in zip(weights, fed.split.server.parameters(), strict=True))


@pytest.mark.parametrize("name", sorted(CHEAP))
def test_each_attack_sends_exactly_the_queries_it_plans(
    name: str, digits_split: SplitModel, digits_data: Dataset
) -> None:
    cls = ATTACKS.get(name)
    attack: SplitExtractionAttack = cls(epochs=2, batch_size=32, flip=False, seed=1, **CHEAP[name])
    assert attack.family == "split-extraction"
    before = [p.detach().clone() for p in digits_split.whole().parameters()]
    kwargs = {"x_own": digits_data.x_train[:60], "y_own": digits_data.y_train[:60], "x_aux": digits_data.x_train[60:73]}
    oracle = SplitOracle.offline(digits_split, budget=attack.budget)
    result = attack.run(digits_split, digits_data.x_test[:100], digits_data.y_test[:100], oracle=oracle, **kwargs)
    assert result.queries == oracle.queries == result.planned_queries == PLANNED[name]
    assert attack.planned_queries(10, 60, 13) == PLANNED[name] <= attack.budget
    assert 0 <= result.accuracy <= 1 and 0 <= result.fidelity <= 1 and result.victim_accuracy > 0.8
    assert result.server_layers == 3 and result.mode == "offline" and result.epochs == 2
    again = attack.run(digits_split, digits_data.x_test[:100], digits_data.y_test[:100], **kwargs)
    assert (again.accuracy, again.fidelity, again.extra["loss"]) == (
        result.accuracy,
        result.fidelity,
        result.extra["loss"],
    )
    assert all(torch.equal(a, b) for a, b in zip(before, digits_split.whole().parameters(), strict=True))
    json.dumps(result.to_dict(), allow_nan=False)
    if result.planned_queries:  # an oracle with less left than the plan is refused before any query
        short = SplitOracle.offline(digits_split, budget=result.planned_queries - 1)
        with pytest.raises(ConfigError, match="plans"):
            attack.run(digits_split, digits_data.x_test[:10], digits_data.y_test[:10], oracle=short, **kwargs)
        assert short.queries == 0


def test_bad_settings_are_refused(digits_split: SplitModel, digits_data: Dataset) -> None:
    x, y = digits_data.x_test[:10], digits_data.y_test[:10]
    with pytest.raises(ConfigError, match="at least one query per class"):
        CraftME(budget=9).run(digits_split, x, y)
    with pytest.raises(ConfigError, match="budget 5 is too small"):
        GMME(budget=5).run(digits_split, x, y, x_aux=x)
    with pytest.raises(ConfigError, match="even"):
        GANME(budget=500, query_batch=7).run(digits_split, x, y)
    with pytest.raises(DataError, match="own labelled data"):
        TrainME().run(digits_split, x, y)
    with pytest.raises(DataError, match="auxiliary"):
        GMME(budget=100).run(digits_split, x, y)
    with pytest.raises(ConfigError):
        SoftTrainME(alpha=1.5)


def test_soft_labels_follow_the_reference_formula() -> None:
    g = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # (1, K=3, 2): cosines to g_0: 1, 0, -1
    p = soft_labels(g, torch.tensor([0]), 0.9)
    s = torch.tensor([2.0, 1.0, 0.0])  # cos + 1
    expected = 0.1 * s / (s.sum() - 1)
    assert torch.allclose(p, torch.tensor([[0.9, float(expected[1]), float(expected[2])]]))


# --- the paper's claims at small scale -----------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist_split() -> SplitModel:
    """The shipped `small_cnn` on mnist5k (98.4% test accuracy) cut after conv2: S = pool2, fc1, fc2."""
    model, _ = load_checkpoint(FIXTURES / "small_cnn-mnist5k.safetensors")
    return split_model(model, 3, (1, 28, 28))


def test_proxy_claims_on_mnist5k(mnist_split: SplitModel, mnist_data: Dataset) -> None:
    """Train-ME with 10% of the training data keeps >= 0.9 of the victim's accuracy; GM-ME (on the 8x8
    digits upsampled, another source: the paper's CIFAR-100-for-CIFAR-10) beats Craft-ME at the same
    budget; all of them and SoftTrain-ME end far above the untrained surrogate. 20 epochs (the
    reference: 200). Measured (seed 0): Train-ME 94.0% (victim 98.4%), GM-ME 64.6%, Craft-ME 32.6%,
    SoftTrain-ME 88.1%, untrained 6.4-12.4%; about 60 s on one core."""
    x, y = mnist_data.x_test, mnist_data.y_test
    own = {"x_own": mnist_data.x_train[:400], "y_own": mnist_data.y_train[:400]}  # 10% of 4,000
    aux = synthetic_set("digits", mnist_data.x_test, 1700, 0)
    train = TrainME(epochs=20, flip=False).run(mnist_split, x, y, **own)
    gm = GMME(budget=2000, epochs=20, flip=False).run(mnist_split, x, y, x_aux=aux)
    craft = CraftME(budget=2000, epochs=20).run(mnist_split, x, y)
    soft = SoftTrainME(budget=2000, epochs=20, flip=False).run(mnist_split, x, y, **own)
    assert train.victim_accuracy > 0.97
    assert train.accuracy >= 0.9 * train.victim_accuracy
    assert gm.accuracy >= craft.accuracy and gm.fidelity >= craft.fidelity
    for r in (train, gm, craft, soft):
        assert r.accuracy >= r.random_accuracy + 0.2 and r.fidelity >= r.random_fidelity + 0.2, r.method
    assert (gm.queries, craft.queries, soft.queries, train.queries) == (2000, 2000, 2000, 0)


def test_keeping_the_best_epoch_reproduces_the_reference(digits_split: SplitModel, digits_data: Dataset) -> None:
    """The reference keeps the epoch with the best test accuracy; bastion reports the last unless asked.
    Same seed, same trajectory: the best epoch's accuracy is at least the last one's."""
    x, y, own = (
        digits_data.x_test,
        digits_data.y_test,
        {"x_own": digits_data.x_train[:100], "y_own": digits_data.y_train[:100]},
    )
    last = TrainME(epochs=6, batch_size=32, flip=False).run(digits_split, x, y, **own)
    best = TrainME(epochs=6, batch_size=32, flip=False, keep="best-accuracy").run(digits_split, x, y, **own)
    assert last.kept_epoch == 6 and 1 <= best.kept_epoch <= 6
    assert best.accuracy >= last.accuracy and best.extra["loss"] == last.extra["loss"]
