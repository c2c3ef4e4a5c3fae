"""Binomial statistics for randomized smoothing, in torch alone (bastion does not depend on SciPy).

- `betainc`: the regularised incomplete beta function I_x(a, b), by its continued fraction
  (evaluated with the modified Lentz method) on the side where the fraction converges fast, and the
  symmetry I_x(a, b) = 1 - I_{1-x}(b, a) on the other.
- `betainc_inv`: its inverse in x, by Newton's method safeguarded by bisection (I_x increases in x),
  to a relative 1e-14 (within 1e-13 of SciPy's `beta.ppf` for n up to 100,000).
- `clopper_pearson_lower`: the one-sided (1 - alpha) Clopper–Pearson lower confidence bound on a
  binomial proportion, Beta^{-1}(alpha; k, n - k + 1), and 0 when k = 0.
- `binomial_test_half`: the two-sided p-value of k successes in m trials under p = 1/2.
- `normal_ppf`: the standard normal quantile, `torch.special.ndtri`.

Everything works elementwise on float64 tensors, so a batch of images is handled at once; the
differential test against SciPy sits in `tests/defenses/test_certify.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.core.errors import ConfigError

__all__ = ["betainc", "betainc_inv", "binomial_test_half", "clopper_pearson_lower", "normal_ppf"]

_TINY = 1e-300  # keeps the Lentz denominators away from zero
_EPS = 1e-15  # relative convergence of the continued fraction
_MAX_TERMS = 100_000  # pairs of terms; convergence takes O(sqrt(max(a, b))) of them
_CHECK_EVERY = 8  # test convergence every few pairs: each test is a device synchronisation
_MAX_ROOT_STEPS = 200  # safeguarded Newton steps (each failed one at least halves the bracket)
_X_TOL = 1e-14  # relative precision of the inverse (I_x itself is good to about 1e-11 for a + b near 1e5)


def _f64(v: Tensor | float | int) -> Tensor:
    return torch.as_tensor(v, dtype=torch.float64)


def _nonzero(t: Tensor) -> Tensor:
    return torch.where(t.abs() < _TINY, torch.full_like(t, _TINY), t)


def _continued_fraction(a: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """The continued fraction of I_x(a, b) (without its prefactor x^a (1-x)^b / (a B(a, b))).

    Its terms are d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m)) and
    d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)); it converges quickly for
    x < (a + 1) / (a + b + 2), the only side on which `betainc` calls it.
    """
    c = torch.ones_like(x)
    d = 1.0 / _nonzero(1.0 - (a + b) * x / (a + 1.0))
    h = d.clone()
    done = torch.zeros_like(x, dtype=torch.bool)
    for m in range(1, _MAX_TERMS + 1):
        two_m = 2.0 * m
        for coef in (
            m * (b - m) * x / ((a + two_m - 1.0) * (a + two_m)),
            -(a + m) * (a + b + m) * x / ((a + two_m) * (a + two_m + 1.0)),
        ):
            d = 1.0 / _nonzero(1.0 + coef * d)
            c = _nonzero(1.0 + coef / c)
            step = c * d
            h = torch.where(done, h, h * step)
        done = done | ((step - 1.0).abs() < _EPS)
        if m % _CHECK_EVERY == 0 and bool(done.all()):
            return h
    raise ArithmeticError(f"the incomplete beta continued fraction did not converge in {_MAX_TERMS} terms")


def _log_beta(a: Tensor, b: Tensor) -> Tensor:
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


def _betainc(a: Tensor, b: Tensor, x: Tensor, log_beta: Tensor) -> Tensor:
    """I_x(a, b) for valid float64 inputs of one shape, with log B(a, b) precomputed."""
    inner = (x > 0) & (x < 1)
    xs = torch.where(inner, x, torch.full_like(x, 0.5))  # a finite stand-in at 0 and 1, answered exactly below
    swap = xs > (a + 1.0) / (a + b + 2.0)
    aa, bb, xx = torch.where(swap, b, a), torch.where(swap, a, b), torch.where(swap, 1.0 - xs, xs)
    log_front = aa * torch.log(xx) + bb * torch.log1p(-xx) - log_beta  # B(a, b) = B(b, a)
    value = torch.exp(log_front) * _continued_fraction(aa, bb, xx) / aa
    value = torch.where(swap, 1.0 - value, value).clamp(0.0, 1.0)
    return torch.where(inner, value, (x >= 1).to(torch.float64))


def _check_beta_args(a: Tensor, b: Tensor) -> None:
    if bool((a <= 0).any() | (b <= 0).any()):
        raise ConfigError("the incomplete beta function needs a > 0 and b > 0")


def betainc(a: Tensor | float, b: Tensor | float, x: Tensor | float) -> Tensor:
    """The regularised incomplete beta function I_x(a, b) for a, b > 0 and x in [0, 1], elementwise (float64)."""
    a, b, x = torch.broadcast_tensors(_f64(a), _f64(b), _f64(x))
    _check_beta_args(a, b)
    if bool(((x < 0) | (x > 1) | x.isnan()).any()):
        raise ConfigError("the incomplete beta function needs x in [0, 1]")
    return _betainc(a, b, x, _log_beta(a, b))


def betainc_inv(a: Tensor | float, b: Tensor | float, q: Tensor | float) -> Tensor:
    """The x in [0, 1] with I_x(a, b) = q, elementwise (float64).

    Newton's method on I_x(a, b) - q (its derivative is the Beta(a, b) density) inside a bracket that
    every evaluation shrinks; a Newton step that would leave the bracket is replaced by a bisection,
    so the iteration cannot diverge and converges quadratically once close.
    """
    a, b, q = torch.broadcast_tensors(_f64(a), _f64(b), _f64(q))
    _check_beta_args(a, b)
    if bool(((q < 0) | (q > 1) | q.isnan()).any()):
        raise ConfigError("the incomplete beta inverse needs q in [0, 1]")
    log_beta = _log_beta(a, b)
    lo, hi = torch.zeros_like(q), torch.ones_like(q)
    # start from the normal approximation of Beta(a, b), close for the large a + b of certification
    mean, total = a / (a + b), a + b
    sd = torch.sqrt(a * b / (total * total * (total + 1.0)))
    x = (mean + torch.special.ndtri(q.clamp(1e-300, 1 - 1e-16)) * sd).clamp(1e-300, 1 - 1e-16)
    done = (q <= 0) | (q >= 1)
    for _ in range(_MAX_ROOT_STEPS):
        f = _betainc(a, b, x, log_beta) - q
        lo, hi = torch.where(f < 0, x, lo), torch.where(f < 0, hi, x)
        log_pdf = (a - 1.0) * torch.log(x) + (b - 1.0) * torch.log1p(-x) - log_beta
        newton = x - f / torch.exp(log_pdf)
        done = done | (f == 0) | ((newton - x).abs() <= _X_TOL * x) | (hi - lo <= _X_TOL * hi)
        if bool(done.all()):
            break
        inside = (newton > lo) & (newton < hi) & newton.isfinite()
        x = torch.where(done, x, torch.where(inside, newton, 0.5 * (lo + hi)))
    return torch.where(q <= 0, torch.zeros_like(x), torch.where(q >= 1, torch.ones_like(x), x))


def clopper_pearson_lower(successes: Tensor, trials: Tensor | int, alpha: float) -> Tensor:
    """One-sided (1 - alpha) Clopper–Pearson lower bound on a binomial proportion, elementwise (float64).

    With k successes in n trials the bound is the alpha-quantile of Beta(k, n - k + 1), and 0 when
    k = 0: the smallest p under which seeing k or more successes still has probability alpha. (Cohen
    et al.'s reference takes the lower end of a two-sided interval at level 2 alpha: the same number.)
    When every trial succeeds it is alpha^(1/n) exactly.
    """
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1); got {alpha!r}")
    k, n = torch.broadcast_tensors(_f64(successes), _f64(trials))
    if bool(((k < 0) | (k > n) | (n < 1)).any()):
        raise ConfigError("successes must lie in [0, trials] and trials must be at least 1")
    positive = k > 0
    a = torch.where(positive, k, torch.ones_like(k))  # a valid stand-in where k = 0; the bound there is 0
    bound = betainc_inv(a, n - a + 1.0, torch.full_like(k, alpha))
    return torch.where(positive, bound, torch.zeros_like(bound))


def binomial_test_half(successes: Tensor, trials: Tensor) -> Tensor:
    """Two-sided p-value of `successes` in `trials` under p = 1/2 (float64), elementwise.

    The null distribution is symmetric, so the p-value is min(1, 2 P(X >= max(k, m - k))), with
    P(X >= j) = I_{1/2}(j, m - j + 1); this is what `scipy.stats.binomtest(k, m, 0.5)` returns.
    """
    k, m = torch.broadcast_tensors(_f64(successes), _f64(trials))
    if bool(((k < 0) | (k > m) | (m < 1)).any()):
        raise ConfigError("successes must lie in [0, trials] and trials must be at least 1")
    top = torch.maximum(k, m - k)  # >= m / 2 >= 1/2, so I's first argument is positive
    tail = betainc(top, m - top + 1.0, torch.full_like(k, 0.5))
    return (2.0 * tail).clamp(max=1.0)


def normal_ppf(p: Tensor) -> Tensor:
    """Standard normal quantile Phi^{-1}(p), float64."""
    return torch.special.ndtri(_f64(p))
