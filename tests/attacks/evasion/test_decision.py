"""The decision-boundary machinery the label-only attacks share: phi, the best records, budgets, bisection."""

import math

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks.evasion._decision import Decision
from bastion.attacks.evasion._trace import QueryTrace
from bastion.core import Victim

BIAS = 1.3  # class 1 where the pixels of a 1 x 2 x 2 image sum to more than this


class Threshold(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        s = x.flatten(1).sum(1)
        return torch.stack([torch.zeros_like(s), s - BIAS], 1)


def decision(n: int, *, max_queries: int | None = None, cap: int | None = None, reserve: int = 0) -> Decision:
    oracle = Victim(Threshold(), input_shape=(1, 2, 2)).oracle(n, output="label", max_queries=max_queries)
    x = torch.zeros(n, 1, 2, 2)
    trace = QueryTrace(n, eps=1.0, device=torch.device("cpu"))
    return Decision(oracle, x, torch.zeros(n, dtype=torch.long), None, norm="l2", trace=trace, cap=cap, reserve=reserve)


def blend_bisect(dec: Decision, scale: Tensor, tol: float, **kw: object) -> Tensor:
    """Bisect the weight a of a * far, far = scale * ones (adversarial at a = 1), to a bracket of `tol`."""
    ids = torch.arange(scale.numel())
    far = scale.view(-1, 1, 1, 1) * torch.ones(scale.numel(), 1, 2, 2)

    def probe(r: Tensor, mid: Tensor) -> Tensor:
        pts = mid.view(-1, 1, 1, 1) * far[r]
        ok = dec.adversarial(pts, ids[r])
        dec.offer(ids[r][ok], pts[ok])
        return ok

    return dec.bisect(
        ids, torch.zeros_like(scale), torch.ones_like(scale), probe, lambda r, lo, hi: hi - lo > tol, **kw
    )


def test_adversarial_is_label_other_than_y_or_the_target() -> None:
    dec = decision(2)
    pts = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
    assert dec.adversarial(pts, torch.tensor([0, 1])).tolist() == [False, True]
    dec.target = torch.tensor([0, 0])
    assert dec.adversarial(pts, torch.tensor([0, 1])).tolist() == [True, False]
    assert dec.oracle.queries.tolist() == [2, 2]


def test_bisection_converges_to_the_boundary_within_tolerance() -> None:
    scale = torch.tensor([1.0, 0.5, 2.0])
    dec = decision(3)
    tol = 1e-4
    hi = blend_bisect(dec, scale, tol)
    exact = BIAS / (4 * scale)  # the weight at which the sum crosses the bias
    assert bool((hi >= exact).all()) and bool((hi - exact <= tol).all())
    # every step halves the bracket: ceil(log2(1 / tol)) queries each
    assert dec.oracle.queries.tolist() == [math.ceil(math.log2(1 / tol))] * 3
    # the adversarial midpoints became the best records, traced at their distance
    assert torch.allclose(dec.best_d, 2 * hi * scale)
    assert dec.trace is not None and torch.equal(dec.trace.dist[:, -1], dec.best_d)


@pytest.mark.parametrize(
    ("max_queries", "cap", "reserve", "spent"), [(5, None, 0, 5), (9, 3, 0, 3), (5, None, 2, 3), (None, 4, 1, 3)]
)
def test_bisection_never_exceeds_a_budget(max_queries: int | None, cap: int | None, reserve: int, spent: int) -> None:
    dec = decision(2, max_queries=max_queries, cap=cap, reserve=reserve)
    hi = blend_bisect(dec, torch.tensor([1.0, 0.5]), 1e-9)
    assert dec.oracle.queries.tolist() == [spent, spent]
    assert bool((hi >= BIAS / (4 * torch.tensor([1.0, 0.5]))).all())  # the end returned is still adversarial
    assert dec.room(torch.arange(2)).tolist() == [0, 0]


def test_start_and_max_steps() -> None:
    dec = decision(2)
    # closed brackets take no step unless `start` says so; max_steps cuts the others
    assert blend_bisect(dec, torch.tensor([1.0, 1.0]), 10.0).tolist() == [1.0, 1.0]
    assert dec.oracle.queries.tolist() == [0, 0]
    start = torch.tensor([True, False])
    hi = blend_bisect(dec, torch.tensor([1.0, 1.0]), 10.0, start=start)
    assert hi.tolist() == [0.5, 1.0] and dec.oracle.queries.tolist() == [1, 0]
    blend_bisect(dec, torch.tensor([1.0, 1.0]), 1e-9, max_steps=4)
    assert dec.oracle.queries.tolist() == [5, 4]


def test_offer_keeps_the_closest_adversarial_input() -> None:
    dec = decision(2)
    ids = torch.tensor([0, 1])
    dec.offer(ids, torch.full((2, 1, 2, 2), 0.5))
    dec.offer(ids, torch.stack([torch.full((1, 2, 2), 0.4), torch.full((1, 2, 2), 0.6)]))
    assert dec.best_d.tolist() == pytest.approx([0.8, 1.0])
    assert float(dec.best_x[1].max()) == 0.5
    dec.offer(ids[:0], torch.empty(0, 1, 2, 2))  # nothing offered, nothing changes
    assert dec.best_d.tolist() == pytest.approx([0.8, 1.0])
