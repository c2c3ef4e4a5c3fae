"""Ownership's building blocks, fast: the exact tests against SciPy and known answers, the null-rate
rule, the key batches, verification through a label-only oracle on models whose answers are known,
Blind Walk's query accounting, and the fine-tuning and pruning helpers on copies."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from bastion.core import Victim
from bastion.core.errors import ConfigError
from bastion.data import Dataset
from bastion.defenses.ownership import BlackMarks, BlackMarksKey, DatasetInference, Watermark
from bastion.defenses.ownership._features import blind_walk
from bastion.defenses.ownership._stats import (
    binomial_tail,
    clopper_pearson,
    harmonic_mean,
    log10_binomial_tail,
    subset_harmonic_mean,
    welch_greater,
    welch_greater_rows,
)
from bastion.defenses.ownership.base import key_batch_edit
from bastion.train.surgery import fine_tune, last_linear, prune_global, sparsity

stats = pytest.importorskip("scipy.stats")


class Constant(nn.Module):
    """Predicts class `c` for every input."""

    def __init__(self, c: int, k: int = 10) -> None:
        super().__init__()
        self.c, self.k = c, k
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.zeros(x.shape[0], self.k) + self.w
        out[:, self.c] = 1.0
        return out


def _const(c: int, shape: tuple[int, int, int] = (1, 8, 8)) -> Victim:
    return Victim(Constant(c), input_shape=shape, num_classes=10)


# --- the tests --------------------------------------------------------------------------------------
def test_binomial_tail_known_answers_and_scipy() -> None:
    assert binomial_tail(32, 32, 0.5) == pytest.approx(2**-32, rel=1e-12)  # BlackMarks N = 32, BER 0: 2.3e-10
    assert binomial_tail(16, 16, 0.5) == pytest.approx(1.52587890625e-05, rel=1e-12)
    assert binomial_tail(10, 0, 0.3) == 1.0 and binomial_tail(10, 1, 0.0) == 0.0
    assert log10_binomial_tail(1000, 1000, 0.1) == pytest.approx(-1000.0, abs=1e-9)  # far below a double
    for n, m, p in [(100, 37, 0.1), (50, 5, 0.1), (20, 14, 0.5), (100, 100, 0.1), (7, 3, 0.25)]:
        assert binomial_tail(n, m, p) == pytest.approx(float(stats.binom.sf(m - 1, n, p)), rel=1e-9)
    with pytest.raises(ConfigError, match="0 <= m <= n"):
        binomial_tail(10, 11, 0.5)


def test_clopper_pearson_matches_scipy_and_its_ends() -> None:
    for m, n in [(7, 20), (0, 10), (10, 10), (33, 50)]:
        ci = stats.binomtest(m, n).proportion_ci(confidence_level=0.95, method="exact")
        lo, hi = clopper_pearson(m, n)
        assert lo == pytest.approx(ci.low, abs=1e-10) and hi == pytest.approx(ci.high, abs=1e-10)
    assert clopper_pearson(0, 10)[0] == 0.0 and clopper_pearson(10, 10)[1] == 1.0
    assert clopper_pearson(10, 10)[0] == pytest.approx(0.025 ** (1 / 10), rel=1e-9)  # (alpha/2)^(1/n) at m = n


def test_welch_one_sided_matches_scipy_and_rows_match_one_by_one() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(20, generator=gen) + 0.5, 2 * torch.randn(25, generator=gen)
    for x, y in [(a, b), (b, a)]:
        t, df, p = welch_greater(x, y)
        ref = stats.ttest_ind(x.double().numpy(), y.double().numpy(), equal_var=False, alternative="greater")
        assert t == pytest.approx(ref.statistic, rel=1e-9) and p == pytest.approx(ref.pvalue, rel=1e-8)
        assert df == pytest.approx(ref.df, rel=1e-9)
    rows_a, rows_b = torch.randn(6, 10, generator=gen), torch.randn(6, 10, generator=gen) - 0.3
    together = welch_greater_rows(rows_a, rows_b)
    for i in range(6):
        assert float(together[i]) == pytest.approx(welch_greater(rows_a[i], rows_b[i])[2], rel=1e-10)
    assert welch_greater(torch.ones(3), torch.zeros(3))[2] == 0.0  # no spread, the means say H1
    assert harmonic_mean([0.5, 0.25]) == pytest.approx(1 / 3) and harmonic_mean([0.1, 0.0]) == 0.0


def test_watermark_verify_counts_agreements_and_p0_rule() -> None:
    wm = Watermark(n=40, seed=3)
    key = wm.make_key((1, 8, 8), 10)
    assert key.x.shape == (40, 1, 8, 8) and float(key.x.min()) == 0.0 and float(key.x.max()) == 1.0
    assert torch.equal(wm.make_key((1, 8, 8), 10).x, key.x)  # seeded
    # smooth noise: neighbouring pixels differ far less than independent uniform noise (about 1/3)
    big = wm.make_key((1, 28, 28), 10).x
    assert float((big[..., 1:] - big[..., :-1]).abs().mean()) < 0.1
    res = wm.verify(_const(4), key)
    m = int((key.labels == 4).sum())
    assert res.matches == m and res.p0 == 0.1 and res.p_value == binomial_tail(40, m, 0.1)
    assert res.queries.tolist() == [1] * 40 and res.interval is not None and res.interval[0] <= m / 40
    # one-label (patch) keys: p0 is the largest agreement rate over independent models, floored at 1/K
    digits_like = torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(100) % 10
    patch = Watermark(key="patch", n=30, patch=3, label=7, seed=1)
    pkey = patch.make_key((1, 8, 8), 10, x_pool=digits_like, y_pool=labels)
    assert pkey.labels.tolist() == [7] * 30 and "calibrate" in patch.verify(_const(7), pkey).warnings[0]
    assert patch.calibrate(pkey, [_const(3)]).p0 == 0.1  # never agrees: the 1/K floor
    calibrated = patch.calibrate(pkey, [_const(3), _const(7)])
    assert calibrated.p0 == 1.0 and calibrated.calibrated_on == 2  # always agrees: rate 1
    assert patch.verify(_const(7), calibrated).p_value == 1.0  # a model that says 7 to everything proves nothing


def test_key_batches_show_every_key_equally_often() -> None:
    x_key, y_key = torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10)
    edit = key_batch_edit(x_key, y_key, 3, seed=0)
    seen = []
    for _ in range(10):  # 30 key samples: every key three times
        x, y = edit(torch.zeros(5, 1, 1, 1), torch.full((5,), -1), torch.Generator())
        assert x.shape[0] == y.shape[0] == 8 and torch.equal(x[5:].flatten().long(), y[5:])
        seen += y[5:].tolist()
    assert torch.bincount(torch.tensor(seen)).tolist() == [3] * 10


def test_blackmarks_encoding_and_extraction_on_known_models() -> None:
    # logits = the input: classes 0-4 sit near one corner, 5-9 near another, so 2-means must split them so
    model = nn.Sequential(nn.Flatten(), nn.Identity())
    v = Victim(model, input_shape=(1, 1, 10), num_classes=10)
    first = (torch.arange(10) < 5).double()
    corner = torch.stack([first if c < 5 else 1 - first for c in range(10)])
    x = (0.8 * corner + 0.1 * torch.eye(10)).float().view(10, 1, 1, 10)
    bits = BlackMarks(seed=0).encode(v, x, torch.arange(10))
    assert len(set(bits[:5].tolist())) == 1 and len(set(bits[5:].tolist())) == 1 and bits[0] != bits[9]
    bm = BlackMarks(bits=16, seed=0)
    signature = torch.randint(2, (16,), generator=torch.Generator().manual_seed(5))
    key = BlackMarksKey(
        x=torch.zeros(16, 1, 8, 8),
        targets=torch.zeros(16, dtype=torch.long),
        signature=signature,
        bit_of_class=torch.tensor([0, 1] * 5),
        source=torch.zeros(16, dtype=torch.long),
    )
    res = bm.verify(_const(3), key)  # class 3 decodes as bit 1 for every key
    agree = int((signature == 1).sum())
    assert res.ber == pytest.approx(1 - agree / 16) and res.p_value == binomial_tail(16, agree, 0.5)
    assert res.queries.tolist() == [1] * 16 and res.claimed == (res.ber == 0 and res.p_value < 0.01)


def test_blind_walk_counts_queries_and_stops_misclassified_points_at_once(digits_data: Dataset) -> None:
    x, y = digits_data.x_test[:6], digits_data.y_test[:6]
    wrong = _const(int((y[0] + 1) % 10))  # misclassifies point 0 at once
    feats, queries = blind_walk(wrong, x[:1], y[:1], directions=4, max_steps=7, scale=1.0, gen=torch.Generator())
    assert queries.tolist() == [3 * 4]  # every walk stops at m = 1
    assert feats.shape == (1, 3, 4) and bool((feats[0, 0] <= 0.005 + 1e-7).all())  # L-inf of one step of U(+-0.005)
    same = digits_data.y_test == y[0]
    x_c, y_c = digits_data.x_test[same][:6], digits_data.y_test[same][:6]
    right = _const(int(y[0]))  # always the true label: every walk runs out of steps
    feats, queries = blind_walk(right, x_c, y_c, directions=2, max_steps=5, scale=1.0, gen=torch.Generator())
    assert queries.tolist() == [3 * 2 * 5] * 6
    di = DatasetInference(directions=2, max_steps=5, m=2, subsets=3)
    rows = di._rows(torch.arange(6 * 3 * 2.0).view(6, 3, 2), None)
    assert rows.shape == (6, 6) and rows[0].tolist() == [0, 1, 2, 3, 4, 5]  # per point: its own six features
    ref = DatasetInference(layout="reference")._rows(torch.arange(6 * 3 * 2.0).view(6, 3, 2), "first")
    # the reference's rows: one feature (norm 0, direction 0) of consecutive points
    assert ref.shape == (3, 6) and ref[0].tolist() == [0.0, 6.0, 12.0, 18.0, 24.0, 30.0]


def test_fine_tuning_modes_and_pruning_work_on_copies(digits_model: nn.Module, digits_data: Dataset) -> None:
    x, y = digits_data.x_train[:200], digits_data.y_train[:200]
    before = {k: v.clone() for k, v in digits_model.state_dict().items()}
    last = next(k for k, m in digits_model.named_modules() if m is last_linear(digits_model))
    ftll, _ = fine_tune(digits_model, x, y, mode="ftll", epochs=1, lr=0.05)
    after = ftll.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"{last}.weight", f"{last}.bias"}
    ftal, _ = fine_tune(digits_model, x, y, mode="ftal", epochs=1, lr=0.05)
    assert not torch.equal(ftal.state_dict()["conv1.weight"], before["conv1.weight"])
    rtll, _ = fine_tune(digits_model, x, y, mode="rtll", epochs=1, lr=0.0001, seed=3)
    assert (rtll.state_dict()[f"{last}.weight"] - before[f"{last}.weight"]).abs().mean() > 0.01  # new layer
    assert all(torch.equal(v, before[k]) for k, v in digits_model.state_dict().items())  # original untouched
    pruned, masks = prune_global(digits_model, 0.7)
    assert sparsity(pruned) == pytest.approx(0.7, abs=1e-3) and sparsity(digits_model) < 0.01
    kept = torch.cat([w.flatten() for n, w in pruned.state_dict().items() if n in masks])
    gone = torch.cat([before[n].flatten()[masks[n].flatten() == 0] for n in masks])
    assert float(gone.abs().max()) <= float(kept[kept != 0].abs().min()) + 1e-12  # the smallest went
    tuned, _ = fine_tune(pruned, x, y, mode="ftal", epochs=1, lr=0.05, masks=masks)
    assert sparsity(tuned) >= 0.7 - 1e-3  # pruned weights stay zero through fine-tuning
    with pytest.raises(ConfigError, match="fine-tuning mode"):
        fine_tune(digits_model, x, y, mode="ftxx")  # type: ignore[arg-type]
    assert not math.isnan(sparsity(tuned))


def test_dataset_inference_end_to_end_when_public_points_sit_on_the_boundary(
    digits_model: nn.Module, digits_data: Dataset
) -> None:
    """A known answer for the whole pipeline: "public" points given a wrong label stop every walk at the
    first step (the model already disagrees), so the regressor must score them high and the one-sided
    test claim the model; with private and public swapped, the test must not."""
    v = Victim(digits_model, input_shape=(1, 8, 8))
    x_priv, y_priv = digits_data.x_train[:60], digits_data.y_train[:60]
    x_pub, y_pub = digits_data.x_test[:60], (digits_data.y_test[:60] + 1) % 10
    di = DatasetInference(directions=2, max_steps=10, m=10, subsets=20, regressor_steps=300, seed=0)
    state = di.fit(v, x_priv[:40], y_priv[:40], x_pub[:40], y_pub[:40])
    res = di.verify(v, state, x_priv[40:], y_priv[40:], x_pub[40:], y_pub[40:])
    assert res.claimed and res.p_value < 1e-3 and res.statistic > 0
    assert res.queries[20:].tolist() == [3 * 2] * 20  # the wrongly labelled points: one query per walk
    assert int(res.queries.max()) <= 3 * 2 * 10 and set(res.extra["curve"]) == {str(m) for m in range(2, 21)}
    swapped = di.verify(v, state, x_pub[40:], y_pub[40:], x_priv[40:], y_priv[40:])
    assert swapped.p_value > 0.5 and not swapped.claimed
    again = di.verify(v, state, x_priv[40:], y_priv[40:], x_pub[40:], y_pub[40:])
    assert again.p_value == res.p_value  # seeded: the same directions and subsets
    # the deciding p-value is one Welch test on all the tested scores; the reference's is kept beside it
    scores = torch.tensor(res.extra["scores_public"]), torch.tensor(res.extra["scores_private"])
    assert scores[0].shape == (20,) and res.p_value == res.extra["p_all_points"] == welch_greater(*scores)[2]
    ref = DatasetInference(directions=2, max_steps=10, m=10, subsets=20, regressor_steps=300, test="subsets")
    ref_res = ref.verify(v, state, x_priv[40:], y_priv[40:], x_pub[40:], y_pub[40:])
    assert ref_res.p_value == ref_res.extra["p_subsets"] == res.extra["p_subsets"] != res.p_value


class FarFromOne(nn.Module):
    """Two classes; class 1's logit sits 10 below class 0's for every input, so no walk reaches it."""

    def forward(self, x: Tensor) -> Tensor:
        z = 1e-3 * x.flatten(1).sum(dim=1, keepdim=True)
        return torch.cat([z + 10.0, z], dim=1)


def test_dataset_inference_runs_each_feature_sets_own_step_budget_by_default() -> None:
    """The reference walks Blind Walk 50 steps and MinGD 500 steps per target: a walk that never arrives
    costs exactly that many queries (3 norms x 1 direction x 50) or gradient steps (3 norms x 1 other
    class x 500)."""
    v = Victim(FarFromOne(), input_shape=(1, 2, 2), num_classes=2)
    x, y = torch.rand(3, 1, 2, 2, generator=torch.Generator().manual_seed(0)), torch.zeros(3, dtype=torch.long)
    assert DatasetInference(directions=1).distances(v, x, y)[1].tolist() == [3 * 50] * 3
    assert DatasetInference(features="mingd").distances(v, x, y)[1].tolist() == [3 * 500] * 3
    assert DatasetInference(features="mingd", max_steps=7).distances(v, x, y)[1].tolist() == [3 * 7] * 3


def test_dataset_inference_p_value_is_calibrated_under_the_null_and_the_subsets_harmonic_mean_is_not() -> None:
    """Scores of private and public points from one distribution (a suspect that never saw the private
    set): the all-points Welch p-value falls below 0.05 and 0.25 about that often; the reference's
    harmonic mean over 100 overlapping subsets of 20 of the same 40 points falls below 0.05 far more
    often (about 8.7% over 4,000 nulls), so it cannot decide a claim."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(600, 40, generator=gen), torch.randn(600, 40, generator=gen)
    p_all = welch_greater_rows(a, b)
    assert 0.03 <= float((p_all < 0.05).double().mean()) <= 0.07
    assert 0.21 <= float((p_all < 0.25).double().mean()) <= 0.29
    p_sub = torch.tensor([subset_harmonic_mean(a[i], b[i], 20, 100, gen) for i in range(600)])
    assert float((p_sub < 0.05).double().mean()) > 0.065
    with pytest.raises(ConfigError, match="2 <= m <= 40"):
        subset_harmonic_mean(a[0], b[0], 41, 10, gen)
