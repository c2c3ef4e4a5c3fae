"""Poisoning: the poisoned set is what the attack says (rate, classes, labels, trigger), the triggers
match their papers' formulas, ASR and clean accuracy are measured as defined, and on mnist5k a BadNets
backdoor planted in 5% of the training set takes hold while the clean model ignores the trigger."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks.poisoning import BadNets, Blend
from bastion.attacks.poisoning.badnets import patch_mask
from bastion.audit.kinds import KINDS, Scenario
from bastion.audit.kinds.backdoor import BackdoorSettings
from bastion.cli._target import ModelSource
from bastion.core import ConfigError, DataError, Victim, make_generator

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _set(n: int = 200, k: int = 10) -> tuple[Tensor, Tensor]:
    x = torch.rand(n, 1, 8, 8, generator=make_generator(0))
    return x, torch.arange(n) % k


@pytest.mark.parametrize("attack", [BadNets(rate=0.1, target=3), Blend(rate=0.1, target=3)])
def test_poisoned_set_is_what_the_attack_says(attack: BadNets | Blend) -> None:
    x, y = _set()
    p = attack.poison(x, y, 10)
    assert p.index.numel() == 20 and bool((y[p.index] != 3).all())  # rate * N, never the target class
    assert p.index.unique().numel() == 20 and torch.equal(p.index, p.index.sort().values)
    assert bool((p.y[p.index] == 3).all())
    rest = torch.ones(200, dtype=torch.bool)
    rest[p.index] = False
    assert torch.equal(p.x[rest], x[rest]) and torch.equal(p.y[rest], y[rest])  # nothing else touched
    assert bool((p.x >= 0).all() and (p.x <= 1).all())
    again = type(attack)(rate=0.1, target=3).poison(x, y, 10)
    assert torch.equal(again.index, p.index) and torch.equal(again.x, p.x)  # the seed reproduces it
    other = type(attack)(rate=0.1, target=3, seed=1).poison(x, y, 10)
    assert not torch.equal(other.index, p.index)


def test_all_to_all_and_target_class_draws() -> None:
    x, y = _set()
    p = BadNets(rate=0.5, mode="all-to-all").poison(x, y, 10)
    assert torch.equal(p.y[p.index], (y[p.index] + 1) % 10)
    drawn = BadNets(rate=0.5, include_target_class=True).poison(x, y, 10)
    assert bool((y[drawn.index] == 0).any())  # the references' draw: every class
    with pytest.raises(DataError, match="can be poisoned"):
        BadNets(rate=0.95).poison(x, y, 10)  # 190 asked, 180 images outside class 0
    with pytest.raises(ConfigError, match="target"):
        BadNets(target=10).poison(x, y, 10)


def test_badnets_stamps_its_patch() -> None:
    x = torch.full((2, 1, 8, 8), 0.5)
    out = BadNets().apply_trigger(x)
    assert bool((out[:, :, 5:, 5:] == 1).all())  # a white 3x3 patch in the bottom-right corner
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[5:, 5:] = False
    assert bool((out[:, 0][:, outside] == 0.5).all())
    checker = BadNets(pattern="checker").apply_trigger(x)[0, 0, 5:, 5:]
    assert checker.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    mask, pattern = patch_mask((1, 8, 8), 3, "all")
    assert int(mask.sum()) == 36
    assert torch.equal(pattern[0, :3, :3], pattern[0, 5:, 5:].flip(0).flip(1))  # what a flip shows
    with pytest.raises(ConfigError, match="does not fit"):
        BadNets(size=5, corners="all").apply_trigger(x)


def test_blend_mixes_in_a_seeded_key() -> None:
    x = torch.rand(3, 1, 8, 8, generator=make_generator(5))
    attack = Blend(alpha=0.2, alpha_test=0.3)
    k = attack.key((1, 8, 8))
    assert torch.equal(k, Blend().key((1, 8, 8))) and not torch.equal(k, Blend(seed=1).key((1, 8, 8)))
    assert torch.allclose(attack.apply_trigger(x), 0.7 * x + 0.3 * k)
    p = Blend(rate=0.5, alpha=0.2).poison(x, torch.tensor([1, 2, 3]), 10)
    assert torch.allclose(p.x[p.index], 0.8 * x[p.index] + 0.2 * k)


class _Always(nn.Module):
    """Predicts class `c` for everything."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.one_hot(torch.full((x.shape[0],), self.c), 10).float()


def test_asr_counts_only_images_the_backdoor_can_move() -> None:
    x, y = _set(100)
    p = BadNets().poison(x, y, 10)
    result = BadNets().evaluate(Victim(_Always(0), input_shape=(1, 8, 8)), x, y, p, seconds=0.0)
    # a model that always answers the target: clean accuracy is the target's share, ASR is 1 (class-0
    # images are left out: they cannot show a backdoor)
    assert result.clean_accuracy == pytest.approx(0.1) and result.asr == 1.0
    d = result.to_dict()
    assert d["n_triggered"] == 90 and d["asr_over_correct"] is None  # no movable image is right when clean
    wrong = BadNets().evaluate(Victim(_Always(4), input_shape=(1, 8, 8)), x, y, p, seconds=0.0)
    assert wrong.asr == 0.0 and wrong.clean_accuracy == pytest.approx(0.1)


def test_badnets_on_mnist5k_takes_hold_and_the_model_is_kept(tmp_path: Path) -> None:
    # 5% of the 4,000 training images stamped, a model trained with the audited model's own recipe: the
    # backdoor takes hold (BadNets: about 99% on MNIST at unchanged clean error) and the clean model
    # ignores the trigger. The poisoned model is kept and read back, not trained again.
    target = ModelSource(checkpoint=FIXTURES / "small_cnn-mnist5k.safetensors").target()
    target = replace(target, model_dir=tmp_path)
    kind = KINDS.get("backdoor")
    sc = Scenario("badnets", "backdoor", "badnets", 1000, BackdoorSettings(params={"rate": 0.05}))
    kind.check(sc, target)
    result = kind.run(sc, target, seed=0, progress=None)
    m = result.metrics
    assert result.record["n_poisoned"] == 200 and result.record["n_train"] == 4000
    assert m["asr"] >= 0.95 and m["clean_drop"] <= 0.02, m
    assert m["clean_model_asr"] <= 0.15, m
    saved = list(tmp_path.glob("badnets-*.safetensors"))
    assert len(saved) == 1
    untrainable = replace(target, trainer=lambda *a, **k: pytest.fail("trained again"))
    again = kind.run(sc, untrainable, seed=0, progress=None)
    assert again.metrics["asr"] == m["asr"] and again.metrics["clean_accuracy"] == m["clean_accuracy"]
