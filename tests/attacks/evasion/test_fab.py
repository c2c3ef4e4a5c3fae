"""FAB-T: the exact box-constrained projection, the attack's contract, and its minimal-norm claim."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bastion.attacks.evasion._fab_projections import project_hyperplane_box
from bastion.attacks.evasion.fab import FABT
from bastion.core import ConfigError, Victim
from bastion.core.progress import ProgressEvent
from bastion.core.threat import Norm, ThreatModel
from bastion.data import load_dataset
from bastion.models import build_model
from bastion.train import TrainConfig, fit

BOX = (0.0, 1.0)


# --- the projection onto {u : w.u = b} inside the box -------------------------------------------


@pytest.mark.parametrize(
    ("norm", "p", "w", "b", "expected"),
    [
        # the box does not bind: L2 moves along w, L-inf moves every active coordinate by the same amount
        ("l2", [0.5, 0.5], [1.0, 1.0], 1.5, [0.25, 0.25]),
        ("linf", [0.5, 0.5, 0.5], [1.0, 2.0, 0.0], 2.4, [0.3, 0.3, 0.0]),
        # the first coordinate hits the face at 1 and the second takes up the rest
        ("l2", [0.9, 0.1], [1.0, 1.0], 1.6, [0.1, 0.5]),
        ("linf", [0.9, 0.2, 0.5], [1.0, 1.0, 0.0], 1.5, [0.1, 0.3, 0.0]),
        # moving down, with a negative weight: coordinate 1 rises while coordinate 0 falls
        ("linf", [0.5, 0.5], [1.0, -1.0], -0.4, [-0.2, 0.2]),
        # unreachable inside the box: the corner that comes closest
        ("l2", [0.5, 0.5], [1.0, 1.0], 2.5, [0.5, 0.5]),
        ("linf", [0.5, 0.5, 0.5], [1.0, -1.0, 0.0], -1.5, [-0.5, 0.5, 0.0]),
        # already on the hyperplane: no move
        ("l2", [0.2, 0.7], [1.0, 1.0], 0.9, [0.0, 0.0]),
    ],
)
def test_projection_known_answers(norm: Norm, p: list[float], w: list[float], b: float, expected: list[float]) -> None:
    d = project_hyperplane_box(torch.tensor([p]), torch.tensor([w]), torch.tensor([b]), norm, BOX)
    assert torch.allclose(d, torch.tensor([expected]), atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_matches_brute_force_in_2d(norm: Norm) -> None:
    """Random lines in the unit square, all in one batch: the answer equals a dense search along the line."""
    gen = torch.Generator().manual_seed(0)
    n = 64
    p = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    w = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    b = (w * torch.rand(n, 2, generator=gen, dtype=torch.float64)).sum(1)  # a line through a point of the box
    d = project_hyperplane_box(p, w, b, norm, BOX)
    u = p + d
    assert torch.allclose((w * u).sum(1), b, atol=1e-9)
    assert bool(((u >= -1e-12) & (u <= 1 + 1e-12)).all())
    # the line w.u = b is u0 + s * (-w1, w0); search it densely, keeping the points inside the box
    u0 = w * (b / (w * w).sum(1))[:, None]
    along = torch.stack((-w[:, 1], w[:, 0]), 1) / w.norm(dim=1, keepdim=True)  # unit direction
    s = torch.linspace(-1.5, 1.5, 30_001, dtype=torch.float64)  # the box's points lie within sqrt(2) of u0
    pts = u0[:, None, :] + s[None, :, None] * along[:, None, :]  # (n, S, 2)
    inside = ((pts >= 0) & (pts <= 1)).all(2)
    dist = (pts - p[:, None, :]).abs().amax(2) if norm == "linf" else (pts - p[:, None, :]).norm(dim=2)
    brute = dist.masked_fill(~inside, torch.inf).amin(1)
    ours = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert torch.allclose(ours, brute, atol=5e-4)


def test_projection_zero_normal_does_not_move() -> None:
    p = torch.full((2, 3), 0.5)
    d = project_hyperplane_box(p, torch.zeros(2, 3), torch.tensor([0.0, 1.0]), "l2", BOX)
    assert torch.equal(d, torch.zeros(2, 3))


# --- the attack on a small trained model ----------------------------------------------------------


@pytest.fixture(scope="module")
def digits_victim() -> tuple[Victim, torch.Tensor, torch.Tensor]:
    """`small_cnn` trained 2 epochs on scikit-learn's digits (about 85% test accuracy) and 64 test images."""
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    fit(model, data.x_train, data.y_train, TrainConfig(epochs=2))
    return Victim(model, input_shape=(1, 8, 8)), data.x_test[:64], data.y_test[:64]


EPS = {"linf": 0.1, "l2": 0.5}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_inside_ball_measured_and_beats_noise(
    digits_victim: tuple[Victim, torch.Tensor, torch.Tensor], norm: Norm
) -> None:
    victim, x, y = digits_victim
    eps = EPS[norm]
    result = FABT(threat=ThreatModel(norm=norm, eps=eps), steps=20, n_target_classes=3).run(victim, x, y)
    size = result.linf if norm == "linf" else result.l2
    assert float(size.max()) <= eps + 1e-6
    assert float(result.x_adv.min()) >= 0.0 and float(result.x_adv.max()) <= 1.0
    assert torch.equal(result.y_adv, victim.predict(result.x_adv))
    assert torch.equal(result.success, result.y_adv != result.y)
    # the same eps as uniform noise on the sphere of the norm (the noise's best chance) barely hurts
    gen = torch.Generator().manual_seed(1)
    u = 2 * torch.rand(x.shape, generator=gen) - 1
    noise = u.sign() if norm == "linf" else u / u.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    noise_acc = float((victim.predict((x + eps * noise).clamp(0, 1)) == y).float().mean())
    assert result.robust_accuracy < noise_acc - 0.15


def test_same_seed_same_result(digits_victim: tuple[Victim, torch.Tensor, torch.Tensor]) -> None:
    victim, x, y = digits_victim
    attack = FABT(threat=ThreatModel(norm="linf", eps=0.05), steps=5, n_target_classes=2, n_restarts=2, seed=3)
    first, second = attack.run(victim, x, y), attack.run(victim, x, y)
    assert torch.equal(first.x_adv, second.x_adv)


def test_early_stop_changes_no_success(digits_victim: tuple[Victim, torch.Tensor, torch.Tensor]) -> None:
    """Leaving at the first point within eps only skips refining the norm: the same samples are fooled."""
    victim, x, y = digits_victim
    threat = ThreatModel(norm="l2", eps=0.5)
    fast = FABT(threat=threat, steps=10, n_target_classes=2).run(victim, x, y)
    full = FABT(threat=threat, steps=10, n_target_classes=2, early_stop=False).run(victim, x, y)
    assert torch.equal(fast.success, full.success)
    assert bool((full.l2[full.success] <= fast.l2[full.success] + 1e-6).all())  # full refines further
    for result in (fast, full):  # points found beyond eps are dropped, not projected back into the ball
        assert torch.equal(result.x_adv[~result.success], x[~result.success])


def test_progress_per_target_and_untargeted_only(digits_victim: tuple[Victim, torch.Tensor, torch.Tensor]) -> None:
    victim, x, y = digits_victim
    events: list[ProgressEvent] = []
    FABT(threat=ThreatModel(eps=0.05), steps=2, n_target_classes=3).run(victim, x[:8], y[:8], progress=events.append)
    assert [(e.task, e.completed, e.total) for e in events] == [("fab-t", i, 3) for i in (1, 2, 3)]
    with pytest.raises(ConfigError, match="untargeted"):
        FABT(threat=ThreatModel(targeted=True))


# --- the minimal-norm claim on a linear model ----------------------------------------------------


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_finds_the_exact_boundary_of_a_linear_model(norm: Norm) -> None:
    """For logits Wx + c the y/t boundary is a hyperplane; its distance is |z_y - z_t| / ||w_y - w_t||_dual.

    Two live classes (a third one can never win), inputs in the middle of the box and small margins,
    so the box does not bind: FAB's minimal perturbation must come within 1% of the exact one.
    """
    gen = torch.Generator().manual_seed(0)
    d = 64
    lin = nn.Linear(d, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(3, d, generator=gen))
        lin.bias.copy_(torch.tensor([0.0, 0.0, -1e3]))
    victim = Victim(nn.Sequential(nn.Flatten(), lin), input_shape=(1, 8, 8))
    x = (0.5 + 0.02 * torch.randn(16, 1, 8, 8, generator=gen)).clamp(0.42, 0.58)
    logits = victim.logits(x)
    y = logits.argmax(1)
    gap = (logits[:, 0] - logits[:, 1]).abs()
    dw = (lin.weight[0] - lin.weight[1]).detach()
    exact = gap / (dw.norm() if norm == "l2" else dw.abs().sum())
    # the unconstrained optimum moves no coordinate by more than exact * max|u_i| (L2) or exact (L-inf)
    move = exact * (dw.abs().max() / dw.norm() if norm == "l2" else 1.0)
    assert float(move.max()) < 0.4  # the box [0, 1] cannot bind from x in [0.42, 0.58]
    result = FABT(threat=ThreatModel(norm=norm, eps=10.0), steps=30, early_stop=False).run(victim, x, y)
    found = result.l2 if norm == "l2" else result.linf
    assert bool(result.success.all())
    assert bool((found >= exact * (1 - 1e-4)).all())  # nothing beats the exact distance
    assert bool((found <= exact * 1.01).all())  # eta = 1.05 overshoots; the pull-backs settle near 1.005
