"""The universal attacks' shared records, against answers worked out by hand on a threshold model.

The model sees two pixels and predicts class 1 when the first exceeds 0.5. The perturbation v adds 0.3
to the first pixel. Six images, each a different case of the papers' fooling rate (share of images
whose *prediction* v changes, correctly classified or not) and of the accuracy under v:

    image  x0   label  clean pred  pred with v (x0 + 0.3, clipped)  changed  correct with v
    a      0.1  0      0  right    0 (0.4)                          no       yes
    b      0.3  0      0  right    1 (0.6)                          yes      no
    c      0.3  1      0  wrong    1 (0.6)                          yes      yes
    d      0.1  1      0  wrong    0 (0.4)                          no       no
    e      0.9  1      1  right    1 (1.0)                          no       yes
    f      0.8  0      1  wrong    1 (1.0)                          no       no
"""

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks.evasion._universal import UniversalAttack, fooling_rate, universal_records
from bastion.attacks.evasion.base import RunContext
from bastion.core import ThreatModel, Victim

X0 = [0.1, 0.3, 0.3, 0.1, 0.9, 0.8]
LABELS = [0, 0, 1, 1, 1, 0]
CHANGED = [False, True, True, False, False, False]
CORRECT_WITH_V = [True, False, True, False, True, False]
CLEAN_CORRECT = [True, True, False, False, True, False]
V = torch.tensor([0.3, 0.0]).view(1, 1, 1, 2)


def threshold_victim() -> Victim:
    """Logits (0.5 - x0, x0 - 0.5): class 1 exactly when the first pixel exceeds 0.5."""
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        layer.bias.copy_(torch.tensor([0.5, -0.5]))
    return Victim(nn.Sequential(nn.Flatten(), layer), input_shape=(1, 1, 2))


def images() -> tuple[Tensor, Tensor]:
    """The six images (the second pixel, which the model ignores, tells them apart) and their labels."""
    x = torch.tensor([[x0, i / 10] for i, x0 in enumerate(X0)]).view(6, 1, 1, 2)
    return x, torch.tensor(LABELS)


def share(flags: list[bool], idx: list[int]) -> float:
    return sum(flags[i] for i in idx) / len(idx)


def test_the_model_and_v_behave_as_the_table_says() -> None:
    victim, (x, y) = threshold_victim(), images()
    assert (victim.predict(x) == y).tolist() == CLEAN_CORRECT
    assert (victim.predict((x + V).clamp(0, 1)) == y).tolist() == CORRECT_WITH_V


def test_fooling_rate_counts_every_image_correct_or_not() -> None:
    victim, (x, _) = threshold_victim(), images()
    clean = victim.predict(x)
    assert fooling_rate(victim, x, V, clean) == 2 / 6  # b (right before) and c (wrong before)
    wrong = torch.tensor([2, 3, 5])  # the misclassified images: c changes, d and f do not
    assert fooling_rate(victim, x[wrong], V, clean[wrong]) == 1 / 3
    assert fooling_rate(victim, x[:0], V, clean[:0]) == 0.0


def test_records_on_a_given_split() -> None:
    victim, (x, y) = threshold_victim(), images()
    fit, held = torch.tensor([0, 1]), torch.tensor([5, 2, 3, 4])
    r = universal_records(victim, x, y, V, fit, held)
    assert r["n_fit"] == 2 and r["n_heldout"] == 4 and r["heldout_index"] == [2, 3, 4, 5]
    # held-out c, d, e, f: only c's prediction changes (a count over correct images alone would give 0/1)
    assert r["fooling_rate_heldout"] == 1 / 4
    assert r["accuracy_under_v_heldout"] == 2 / 4  # c (now right) and e
    assert r["clean_accuracy_heldout"] == 1 / 4  # e
    assert r["fooling_rate_fit"] == 1 / 2  # a keeps its prediction, b changes
    assert r["dominant_share"] == 3 / 4  # under v, c, e and f are predicted 1, d 0
    assert r["v_linf"] == pytest.approx(0.3) and r["v_l2"] == pytest.approx(0.3)
    # no held-out image: no held-out numbers
    empty = universal_records(victim, x, y, V, torch.arange(6), torch.tensor([], dtype=torch.long))
    assert empty["n_heldout"] == 0 and empty["heldout_index"] == []
    assert empty["fooling_rate_heldout"] is None and empty["accuracy_under_v_heldout"] is None
    assert empty["dominant_share"] is None and empty["fooling_rate_fit"] == 2 / 6


@dataclass(frozen=True, kw_only=True)
class GivenV(UniversalAttack):
    """A universal attack whose fit returns `V`, and remembers the images it was asked to fit."""

    fitted: ClassVar[list[Tensor]] = []

    def _fit(
        self, victim: Victim, x: Tensor, gen: torch.Generator, ctx: RunContext | None
    ) -> tuple[Tensor, dict[str, Any]]:
        self.fitted.append(x.clone())
        return V.clone(), {"given": True}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_run_applies_v_to_every_image_and_reports_the_held_out_numbers(seed: int) -> None:
    victim, (x, y) = threshold_victim(), images()
    GivenV.fitted.clear()
    r = GivenV(threat=ThreatModel(eps=0.3), fit_fraction=1 / 3, seed=seed).run(victim, x, y)
    e = r.extra
    held = e["heldout_index"]
    fit = [i for i in range(6) if i not in held]
    assert e["n_fit"] == len(fit) == 2 and e["n_heldout"] == 4 and e["given"] is True
    # v fits on the fit images, misclassified ones included, and never sees a held-out one
    assert len(GivenV.fitted) == 1 and torch.equal(GivenV.fitted[0], x[fit])
    assert e["fooling_rate_heldout"] == share(CHANGED, held)
    assert e["accuracy_under_v_heldout"] == share(CORRECT_WITH_V, held)
    assert e["clean_accuracy_heldout"] == share(CLEAN_CORRECT, held)
    assert e["fooling_rate_fit"] == share(CHANGED, fit)
    # every image, misclassified or not, gets the one v; robust accuracy is the accuracy under v
    assert torch.equal(r.x_adv, (x + V).clamp(0, 1))
    assert r.robust_accuracy == 3 / 6 and r.clean_accuracy == 3 / 6
    assert r.success_rate == 1 / 3  # of a, b, e (correct when clean), only b is fooled
