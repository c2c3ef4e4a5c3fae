"""The significance tests of the ownership methods, in torch and the standard library (no SciPy).

- `binomial_tail`: the exact upper tail P(Bin(n, p) >= m), summed term by term in log space, so
  p-values far below 1e-300 keep their logarithm (`log10_binomial_tail`).
- `clopper_pearson`: the two-sided exact (Clopper-Pearson) interval on a binomial proportion.
- `welch_greater`: the one-sided Welch t-test, H1: mean(a) > mean(b), with the Welch-Satterthwaite
  degrees of freedom; the Student-t tail through the regularised incomplete beta function.
- `harmonic_mean`: the harmonic mean of p-values.
- `subset_harmonic_mean`: dataset inference's table value in the reference (cleverhans-lab/dataset-inference
  `src/notebooks/utils.py`, `generate_table`): one-sided Welch p-values on random subsets of m points
  per side, the same positions on both sides, combined by their harmonic mean. The subsets share one set
  of scores, so the result is not a calibrated p-value (docs/ownership.md, "Which p-value decides").

The incomplete beta function and its inverse are randomized smoothing's (`bastion.defenses.certify`).
The differential tests against SciPy are in `tests/defenses/test_ownership_stats.py`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bastion.core.errors import ConfigError
from bastion.defenses.certify._stats import betainc, betainc_inv

__all__ = [
    "binomial_tail",
    "clopper_pearson",
    "harmonic_mean",
    "log10_binomial_tail",
    "subset_harmonic_mean",
    "welch_greater",
    "welch_greater_rows",
]


def _check(n: int, m: int, p: float) -> None:
    if n < 0 or not 0 <= m <= n:
        raise ConfigError(f"a binomial count needs 0 <= m <= n; got m={m}, n={n}")
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"a binomial success rate must lie in [0, 1]; got {p}")


def log10_binomial_tail(n: int, m: int, p: float) -> float:
    """log10 P(Bin(n, p) >= m), exact (a sum of the n - m + 1 terms, in log space)."""
    _check(n, m, p)
    if m == 0 or p == 1.0:
        return 0.0
    if p == 0.0:
        return -math.inf
    log_terms = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)
        for k in range(m, n + 1)
    ]
    top = max(log_terms)
    return (top + math.log(sum(math.exp(t - top) for t in log_terms))) / math.log(10)


def binomial_tail(n: int, m: int, p: float) -> float:
    """P(Bin(n, p) >= m), exact: the chance that a model agreeing with each of n keys at rate p
    independently agrees with at least m of them (0.0 once it underflows a double)."""
    return min(1.0, 10.0 ** log10_binomial_tail(n, m, p))


def clopper_pearson(m: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The two-sided Clopper-Pearson interval on a proportion with m successes in n trials:
    [Beta^-1(a/2; m, n - m + 1), Beta^-1(1 - a/2; m + 1, n - m)], a = 1 - level, with 0 and 1 at the ends."""
    _check(n, m, 0.5)
    if n == 0:
        raise ConfigError("a confidence interval needs at least one trial")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"a confidence level must lie in (0, 1); got {level}")
    a = 1.0 - level
    lo = 0.0 if m == 0 else float(betainc_inv(m, n - m + 1, a / 2))
    hi = 1.0 if m == n else float(betainc_inv(m + 1, n - m, 1 - a / 2))
    return lo, hi


def welch_greater(a: Tensor, b: Tensor) -> tuple[float, float, float]:
    """The one-sided Welch t-test of H1: mean(a) > mean(b). Returns (t, degrees of freedom, p-value).

    Two samples of one value each, or without spread, have no t statistic: the p-value is then 1.0
    when the means do not support H1 and 0.0 when they differ in its favour.
    """
    a, b = a.double().flatten(), b.double().flatten()
    if a.numel() < 2 or b.numel() < 2:
        raise ConfigError(f"a Welch t-test needs at least 2 values per side; got {a.numel()} and {b.numel()}")
    va, vb = float(a.var()) / a.numel(), float(b.var()) / b.numel()
    diff = float(a.mean() - b.mean())
    se2 = va + vb
    if se2 == 0.0:
        return (math.copysign(math.inf, diff) if diff else 0.0), math.nan, (0.0 if diff > 0 else 1.0)
    t = diff / math.sqrt(se2)
    df = se2**2 / (va**2 / (a.numel() - 1) + vb**2 / (b.numel() - 1))
    # P(T > |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2) / 2
    half = 0.5 * float(betainc(df / 2, 0.5, df / (df + t * t)))
    return t, df, half if t > 0 else 1.0 - half


def welch_greater_rows(a: Tensor, b: Tensor) -> Tensor:
    """One-sided Welch p-values (H1: mean(a) > mean(b)) for every row of a (S, m) and b (S, m'), at once.
    Rows without spread on either side get 0.0 or 1.0 as in `welch_greater`."""
    a, b = a.double(), b.double()
    if a.shape[1] < 2 or b.shape[1] < 2:
        raise ConfigError(f"a Welch t-test needs at least 2 values per side; got {a.shape[1]} and {b.shape[1]}")
    va, vb = a.var(dim=1) / a.shape[1], b.var(dim=1) / b.shape[1]
    diff = a.mean(dim=1) - b.mean(dim=1)
    se2 = va + vb
    flat = se2 == 0
    se2_safe = torch.where(flat, torch.ones_like(se2), se2)
    t = diff / se2_safe.sqrt()
    denom = va**2 / (a.shape[1] - 1) + vb**2 / (b.shape[1] - 1)
    df = se2_safe**2 / torch.where(denom == 0, torch.ones_like(denom), denom)
    half = 0.5 * betainc(df / 2, torch.full_like(df, 0.5), df / (df + t * t))
    p = torch.where(t > 0, half, 1.0 - half)
    return torch.where(flat, (diff <= 0).double(), p)


def harmonic_mean(p_values: Tensor | list[float]) -> float:
    """The harmonic mean of p-values (0.0 when any is 0)."""
    p = torch.as_tensor(p_values, dtype=torch.float64).flatten()
    if p.numel() == 0:
        raise ConfigError("the harmonic mean needs at least one p-value")
    if bool((p <= 0).any()):
        return 0.0
    return float(p.numel() / (1.0 / p).sum())


def subset_harmonic_mean(a: Tensor, b: Tensor, m: int, subsets: int, gen: torch.Generator) -> float:
    """The harmonic mean of one-sided Welch p-values (H1: mean(a) > mean(b)) over `subsets` random subsets of
    `m` positions, each drawn among the first min(len(a), len(b)) and used on both sides (ref)."""
    size = min(a.numel(), b.numel())
    if not 2 <= m <= size:
        raise ConfigError(f"subsets of m points per side need 2 <= m <= {size} (the smaller side); got m={m}")
    pos = torch.stack([torch.randperm(size, generator=gen)[:m] for _ in range(subsets)])  # (S, m)
    return harmonic_mean(welch_greater_rows(a.flatten()[pos], b.flatten()[pos]))
