"""OOD detection: the scores are their papers' formulas, the sets are what they say, and on the default
model the detectors separate other digits and noise from the test images, energy at least as well as MSP."""

import pytest
import torch
from torch import nn

import bastion.defenses  # noqa: F401  (registers the detectors)
from bastion.core import DEFENSES, ConfigError, Victim, make_generator
from bastion.data import Dataset
from bastion.data.ood import SYNTHETIC_SETS, synthetic_set
from bastion.defenses.detect.ood import MSP, Energy


class Fixed(nn.Module):
    """Returns the logits it is given for each input's first pixel index (a table lookup)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[(x.flatten(1)[:, 0] * (len(self.table) - 1)).round().long()]


def test_scores_are_the_papers_formulas() -> None:
    z = torch.randn(11, 5, generator=make_generator(0)) * 4
    victim = Victim(Fixed(z))
    x = torch.linspace(0, 1, 11).reshape(11, 1, 1, 1)
    assert torch.allclose(MSP()._score(victim, x, None), z.softmax(1).amax(1))
    assert torch.allclose(Energy()._score(victim, x, None), torch.logsumexp(z.double(), 1))
    t = 3.0
    assert torch.allclose(Energy(temperature=t)._score(victim, x, None), t * torch.logsumexp(z.double() / t, 1))


def test_a_model_that_answers_the_same_everywhere_detects_nothing() -> None:
    victim = Victim(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).requires_grad_(False).apply(_zero))
    x_id, x_ood = torch.rand(40, 1, 2, 2), torch.rand(30, 1, 2, 2)
    for cls in (MSP, Energy):
        assert cls().run(victim, x_id, x_ood).auroc == 0.5


def _zero(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.zeros_(m.weight)
        nn.init.zeros_(m.bias)


def test_ood_sets_are_shaped_seeded_and_in_range(mnist_data: Dataset) -> None:
    x_id = mnist_data.x_test[:50]
    for i, name in enumerate(SYNTHETIC_SETS):
        s = synthetic_set(name, x_id, 20, seed=i)
        assert s.shape == (20, 1, 28, 28) and float(s.min()) >= 0 and float(s.max()) <= 1, name
        assert torch.equal(s, synthetic_set(name, x_id, 20, seed=i)), name
    assert torch.equal(synthetic_set("inverted", x_id, 5, 0), 1 - x_id[:5])
    assert torch.equal(synthetic_set("rotated", x_id, 5, 0)[0], x_id[0].rot90(1, (1, 2)))
    colour = synthetic_set("digits", torch.rand(3, 3, 32, 32), 4, seed=0)
    assert colour.shape == (4, 3, 32, 32) and torch.equal(colour[:, 0], colour[:, 2])  # grey over the channels
    with pytest.raises(ConfigError, match="unknown OOD set 'noise'"):
        synthetic_set("noise", x_id, 5, 0)


def test_detectors_separate_other_digits_and_noise_on_the_default_model(
    mnist_model: nn.Module, mnist_data: Dataset
) -> None:
    victim = Victim(mnist_model, input_shape=(1, 28, 28))
    x_id = mnist_data.x_test[:500]
    fpr95 = {}
    for name in DEFENSES.names("ood"):
        detector = DEFENSES.get(name)()
        state = detector.fit(victim, mnist_data.x_train, mnist_data.y_train)  # the model's own training split
        sets = {s: synthetic_set(s, x_id, 500, seed=1) for s in ("digits", "gaussian", "uniform")}
        results = {s: detector.run(victim, x_id, x_ood, state=state) for s, x_ood in sets.items()}
        assert results["digits"].auroc > 0.9 and results["gaussian"].auroc > 0.85, name
        if detector.fits:  # feature space catches the noise the softmax answers confidently (msp 0.76 on uniform)
            assert results["gaussian"].auroc >= 0.9 and results["uniform"].auroc >= 0.9, name
        fpr95[name] = (results["digits"].fpr_at_tpr(0.95) + results["gaussian"].fpr_at_tpr(0.95)) / 2
    assert fpr95["energy"] <= fpr95["msp"]  # Liu et al.: energy lowers the FPR at 95% TPR of the softmax score
