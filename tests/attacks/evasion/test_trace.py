"""QueryTrace: first success inside the ball and the best distance per budget, laid over the run."""

import pytest
import torch

from bastion.attacks.evasion._trace import BUDGETS, QueryTrace


def test_distance_per_budget_and_first_success() -> None:
    trace = QueryTrace(3, eps=1.0, device=torch.device("cpu"))
    # sample 0: adversarial at distance 3 after 5 queries, 0.9 (inside eps) after 40, 0.5 after 300
    trace.adversarial(torch.tensor([0, 1]), torch.tensor([5, 7]), torch.tensor([3.0, 2.0]))
    trace.adversarial(torch.tensor([0]), torch.tensor([40]), torch.tensor([0.9]))
    trace.adversarial(torch.tensor([0]), torch.tensor([300]), torch.tensor([0.5]))
    out = trace.to_extra(torch.tensor([0, 2, 4]), n_total=5, max_spent=300)
    assert out["first_success_query"] == [40, -1, -1, -1, -1]  # sample 1 never came inside eps
    curve = out["query_curve"]
    assert curve["budgets"] == [b for b in BUDGETS if b <= 500] and curve["budgets"][-1] == 500
    assert curve["success_rate"][:4] == [0.0, 0.0, pytest.approx(1 / 3), pytest.approx(1 / 3)]
    dist0 = out["dist_at_budget"][0]
    assert dist0[:6] == [3.0, 3.0, 0.9, 0.9, 0.9, 0.5]  # budgets 10, 25, 50, 100, 250, 500
    assert out["dist_at_budget"][1] == [None] * 6  # not attacked
    assert out["dist_at_budget"][4] == [None] * 6  # attacked (third handed in), nothing found
    # medians over the three attacked samples: sample 2 never found one (inf)
    assert curve["median_dist"][0] == 3.0 and curve["median_dist"][5] == 2.0


def test_score_based_records_no_distance() -> None:
    trace = QueryTrace(2, eps=0.3, device=torch.device("cpu"))
    trace.adversarial(torch.tensor([1]), torch.tensor([12]))
    out = trace.to_extra(torch.tensor([0, 1]), n_total=2, max_spent=12)
    assert out["first_success_query"] == [-1, 12]
    assert out["query_curve"] == {"budgets": [10, 25], "success_rate": [0.0, 0.5]}
    assert "dist_at_budget" not in out


def test_no_queries_no_budgets() -> None:
    out = QueryTrace(0, eps=0.3, device=torch.device("cpu")).to_extra(torch.tensor([], dtype=torch.long), 4, 0)
    assert out["query_curve"]["budgets"] == [] and out["first_success_query"] == [-1] * 4
