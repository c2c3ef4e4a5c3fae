"""BFA and random flips: the bit ranking follows the paper's rule, every step raises the attack's loss,
seeds reproduce, bad input is refused, and the paper's claim holds at small scale: a few dozen aimed
flips crush the 8-bit `small_cnn` on `mnist5k` where as many random flips do nothing."""

import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from bastion.attacks.weights import BFA, RandomFlip
from bastion.attacks.weights._ranking import rank_bits
from bastion.attacks.weights.quantize import BIT_VALUES, QuantizedModel, bits_of
from bastion.audit import AuditTarget
from bastion.cli._target import ModelSource
from bastion.core import ConfigError, DataError, Victim, make_generator
from bastion.core.results import BitFlipResult
from bastion.data import Dataset

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def test_bits_are_ranked_by_the_papers_rule() -> None:
    gen = make_generator(0)
    grad = torch.randn(50, generator=gen)
    codes = torch.randint(-128, 128, (50,), generator=gen).to(torch.int8)
    for raise_loss in (True, False):
        idx, bits = rank_bits(grad, codes, 7, raise_loss=raise_loss)
        top = set(grad.abs().topk(7).indices.tolist())
        expected = []  # an explicit loop over the 7 weights of largest |gradient| and their 8 bits
        for i in top:
            for b in range(8):
                first_order = (
                    float(grad[i]) * float(BIT_VALUES[b]) * (1 if int(bits_of(codes[i : i + 1])[0, b]) == 0 else -1)
                )
                if (first_order > 0) == raise_loss and first_order != 0:
                    expected.append((abs(first_order), i, b))
        expected.sort(key=lambda t: -t[0])
        assert [(int(i), int(b)) for i, b in zip(idx, bits, strict=True)] == [(i, b) for _, i, b in expected]


def _digits(digits_model: nn.Module, digits_data: Dataset) -> tuple[Victim, torch.Tensor, torch.Tensor, torch.Tensor]:
    victim = Victim(digits_model, input_shape=(1, 8, 8))
    return victim, digits_data.x_test[:200], digits_data.y_test[:200], digits_data.x_train


def test_every_step_raises_the_attack_loss_and_seeds_reproduce(digits_model: nn.Module, digits_data: Dataset) -> None:
    victim, x, y, x_attack = _digits(digits_model, digits_data)
    result = BFA(max_flips=8, batch_size=64, seed=1).run(victim, x, y, x_attack=x_attack)
    assert result.n_flips == 8 and result.hamming == 8 and result.n_attack == 64 and result.n_eval == 200
    assert result.loss is not None and len(result.loss) == len(result.accuracy) == 9
    ends = [sum(result.extra["steps"][: i + 1]) for i in range(len(result.extra["steps"]))]
    at_steps = [result.loss[0]] + [result.loss[e] for e in ends]
    assert all(b > a for a, b in itertools.pairwise(at_steps))  # progressive search: L rises
    assert result.final_accuracy < result.quantized_accuracy
    again = BFA(max_flips=8, batch_size=64, seed=1).run(victim, x, y, x_attack=x_attack)
    assert again.flips == result.flips and again.accuracy == result.accuracy
    other = RandomFlip(max_flips=8, seed=2).run(victim, x, y)
    assert RandomFlip(max_flips=8, seed=2).run(victim, x, y).flips == other.flips
    assert RandomFlip(max_flips=8, seed=3).run(victim, x, y).flips != other.flips
    assert other.loss is None and other.n_attack == 0 and other.hamming == 8


def test_a_target_accuracy_stops_the_attack(digits_model: nn.Module, digits_data: Dataset) -> None:
    victim, x, y, x_attack = _digits(digits_model, digits_data)
    result = BFA(max_flips=40, batch_size=64, target_accuracy=0.88).run(victim, x, y, x_attack=x_attack)
    assert result.stop == "target_accuracy" and result.final_accuracy <= 0.88 and result.n_flips < 40
    assert all(a > 0.88 for a in result.accuracy[: -result.extra["steps"][-1]])  # not one step too late
    assert result.flips_to(0.88) == result.n_flips


def test_layer_draw_spreads_flips_over_layers(digits_model: nn.Module, digits_data: Dataset) -> None:
    victim, x, y, _ = _digits(digits_model, digits_data)
    by_layer = RandomFlip(max_flips=40, draw="layer").run(victim, x, y)
    by_bit = RandomFlip(max_flips=40).run(victim, x, y)
    small = min(by_layer.layers, key=lambda k: by_layer.layers[k])  # the layer of fewest weights
    assert sum(f.layer == small for f in by_layer.flips) >= 4  # about a quarter of the flips
    assert sum(f.layer == small for f in by_bit.flips) <= 2  # its share of the bits: under 1%


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_flips": 0}, "max_flips must be >= 1"),
        ({"k_top": 0}, "k_top must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"target_accuracy": 1.5}, "target_accuracy must be >= 0 and <= 1"),
        ({"max_flips": 2.5}, "max_flips must be int"),
    ],
)
def test_bad_parameters_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BFA(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="draw must be"):
        RandomFlip(draw="everywhere")  # type: ignore[arg-type]


def test_bad_inputs_are_data_errors(digits_model: nn.Module, digits_data: Dataset) -> None:
    victim, x, y, x_attack = _digits(digits_model, digits_data)
    with pytest.raises(DataError, match="pass x_attack"):
        BFA().run(victim, x, y)
    with pytest.raises(DataError, match="attack batch of 128 images and was given 50"):
        BFA().run(victim, x, y, x_attack=x_attack[:50])
    with pytest.raises(DataError, match="labels must be a tensor"):
        BFA().run(victim, x, y[:3], x_attack=x_attack)
    with pytest.raises(DataError, match="bounds"):
        RandomFlip().run(victim, x * 3, y)


# --- the paper's claim at small scale ------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist5k() -> AuditTarget:
    return ModelSource(checkpoint=FIXTURES / "small_cnn-mnist5k.safetensors").target()


@pytest.fixture(scope="module")
def bfa_mnist(mnist5k: AuditTarget) -> BitFlipResult:
    """BFA with the paper's defaults (k_top 10, 128 training images labelled by the model) on the first
    500 test images, seed 0, until 20% accuracy or 45 flips."""
    x, y = mnist5k.test(500)
    x_attack, _ = mnist5k.members(mnist5k.n_members)
    return BFA(max_flips=45, target_accuracy=0.2, seed=0).run(mnist5k.victim, x, y, x_attack=x_attack)


def test_bfa_crushes_the_8bit_model_where_random_flips_do_nothing(
    mnist5k: AuditTarget, bfa_mnist: BitFlipResult
) -> None:
    """Measured (seed 0; `benchmarks/bitflip_mnist5k.py` for seeds 0-5): float and 8-bit 97.6%; BFA
    61.6% after 30 flips, 20% reached after 42 (seeds 0-5: 20.8-61.6% after 30, 20% after 31-42);
    as many random flips: 97.6% (97.6-97.8% over the seeds). The spec's proxy, 20% within 30 flips,
    is missed by the paper's search on this model: after killing one class in about five flips, the
    cross-entropy it maximises keeps rising on images already misclassified (see docs/weights.md)."""
    r = bfa_mnist
    assert abs(r.float_accuracy - r.quantized_accuracy) <= 0.005
    assert r.stop == "target_accuracy" and r.n_flips <= 45 and r.final_accuracy <= 0.2
    assert r.hamming == r.n_flips == len({(f.layer, f.index, f.bit) for f in r.flips})
    assert all(bin((f.before ^ f.after) & 0xFF).count("1") == 1 for f in r.flips)
    x, y = mnist5k.test(500)
    random = RandomFlip(max_flips=r.n_flips, seed=0).run(mnist5k.victim, x, y)
    assert random.hamming == r.n_flips
    assert random.final_accuracy >= random.quantized_accuracy - 0.02  # as many random flips: at most 2 points
    assert r.accuracy[30] <= random.accuracy[30] - 0.3  # already far apart after 30 flips


def test_the_search_grows_n_until_a_layer_gains_and_respects_the_budget(
    digits_model: nn.Module, digits_data: Dataset
) -> None:
    """With single flips made worthless, step 3 of the search must go on to n = 2 and flip two bits at
    once; with one flip of budget left it cannot, and stops."""

    @dataclass(frozen=True, kw_only=True)
    class PairsOnly(BFA):
        def _objective(self, q: QuantizedModel, state: object) -> float | None:
            changed = sum(int((layer.weight != q.dequantized(n)).sum()) for n, layer in q.layers.items())
            loss = super()._objective(q, state)
            return -float("inf") if changed == 1 else loss

    victim, x, y, x_attack = _digits(digits_model, digits_data)
    result = PairsOnly(max_flips=3, batch_size=64).run(victim, x, y, x_attack=x_attack)
    assert result.extra["steps"] == [2] and result.n_flips == 2 and result.stop == "no_gain"
    assert result.hamming == 2 and any("stopped after 2 of 3 flips" in w for w in result.warnings)
