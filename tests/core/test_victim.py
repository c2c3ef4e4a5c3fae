import pytest
import torch
from torch import nn

from bastion.core import ConfigError, DataError, ModelError, Victim


class Recorder(nn.Module):
    """Records the batch sizes it sees; has dropout so train mode would be visible."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.drop = nn.Dropout(0.5)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.shape[0])
        return self.drop(self.fc(x.flatten(1)))


def test_eval_mode_and_parameters_left_as_found() -> None:
    model = Recorder().train()
    model.fc.bias.requires_grad_(False)  # a caller's own mix of trainable and frozen parameters
    victim = Victim(model, input_shape=(1, 2, 2))
    assert not model.training  # the one documented, lasting change
    assert model.fc.weight.requires_grad and not model.fc.bias.requires_grad
    x = torch.rand(5, 1, 2, 2)
    assert torch.equal(victim.logits(x), victim.logits(x))  # dropout off: deterministic


def test_batches_inputs_larger_than_batch_size() -> None:
    model = Recorder()
    victim = Victim(model, batch_size=4)
    x = torch.rand(10, 1, 2, 2)
    logits = victim.logits(x)
    assert model.seen == [4, 4, 2]
    assert logits.shape == (10, 3)
    model.seen.clear()
    grad_logits = victim(x)  # white-box view batches too, and keeps gradients
    assert model.seen == [4, 4, 2]
    x.requires_grad_(True)
    victim(x).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert torch.allclose(grad_logits, logits)


def test_an_attack_leaves_the_callers_parameters_as_it_found_them() -> None:
    from bastion.attacks.evasion import PGD

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    flags = [p.requires_grad for p in model.parameters()]
    weights = [p.detach().clone() for p in model.parameters()]
    x, y = torch.rand(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    PGD(steps=3).run(Victim(model), x, y)
    assert [p.requires_grad for p in model.parameters()] == flags == [True, True]
    assert all(p.grad is None for p in model.parameters())  # input gradients only: no weight gradient
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights, strict=True))


def test_normalisation_applied_inside() -> None:
    model = Recorder()
    plain = Victim(model)
    x = torch.rand(2, 1, 2, 2)
    normed = Victim(Recorder(), mean=[0.5], std=[0.25])
    normed.model[1].load_state_dict(model.state_dict())
    assert torch.allclose(normed.logits(x), plain.logits((x - 0.5) / 0.25))


def test_input_checks() -> None:
    victim = Victim(Recorder(), input_shape=(1, 2, 2))
    with pytest.raises(DataError, match="shape"):
        victim.check_input(torch.rand(2, 3, 2, 2))
    with pytest.raises(DataError, match="bounds"):
        victim.check_input(torch.rand(2, 1, 2, 2) * 255)
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        victim.check_input(torch.rand(4, 4))
    victim.check_input(torch.rand(2, 1, 2, 2))


def test_model_returning_non_logits_is_a_model_error() -> None:
    class TupleModel(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x.flatten(1), x

    with pytest.raises(ModelError, match="--logits-key"):
        Victim(TupleModel()).logits(torch.rand(2, 1, 2, 2))


def test_num_classes_read_from_model() -> None:
    assert Victim(Recorder(), input_shape=(1, 2, 2)).num_classes == 3
    with pytest.raises(ConfigError):
        Victim(Recorder(), batch_size=0)


def test_features_are_the_input_of_the_last_linear_layer() -> None:
    torch.manual_seed(0)
    head = nn.Linear(12, 3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), head)
    victim = Victim(net, batch_size=4)
    x = torch.rand(10, 1, 4, 4)
    feats = victim.features(x)  # three batches
    assert feats.shape == (10, 12) and bool((feats >= 0).all())  # after the ReLU
    assert torch.allclose(head(feats), victim.logits(x), atol=1e-6)
    assert victim.features(x[:0]).shape == (0, 12)
    with pytest.raises(ModelError, match=r"no nn\.Linear"):
        Victim(nn.Sequential(nn.Flatten())).features(x)


def test_like_sees_another_model_the_same_way() -> None:
    first = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    v = Victim(first, input_shape=(1, 2, 2), bounds=(0.0, 2.0), batch_size=7)
    other = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    w = v.like(other)
    assert w.model is other and w.input_shape == (1, 2, 2) and w.bounds == (0.0, 2.0) and w.batch_size == 7
    assert w.device == v.device and w.num_classes == 3
    x = torch.rand(5, 1, 2, 2)
    assert torch.equal(w.logits(x), other(x)) and not torch.equal(w.logits(x), v.logits(x))
