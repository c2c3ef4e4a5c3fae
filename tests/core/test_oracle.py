import pytest
import torch
from torch import nn

from bastion.core import ConfigError, DataError, QueryBudgetExceeded, Victim


def linear_victim(k: int = 5) -> Victim:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, k))
    return Victim(model, input_shape=(3, 2, 2))


def batch(n: int) -> torch.Tensor:
    return torch.rand(n, 3, 2, 2, generator=torch.Generator().manual_seed(1))


def test_counts_queries_per_sample() -> None:
    oracle = linear_victim().oracle(4)
    x = batch(6)
    oracle.query(x, torch.tensor([0, 0, 2, 3, 3, 3]))
    oracle.query(batch(4))
    assert oracle.queries.tolist() == [3, 1, 2, 4]


def test_budget_raises_before_answering_and_counts_nothing() -> None:
    oracle = linear_victim().oracle(2, max_queries=3)
    oracle.query(batch(2), torch.tensor([0, 1]))
    oracle.query(batch(2), torch.tensor([0, 0]))
    assert oracle.remaining().tolist() == [0, 2]
    with pytest.raises(QueryBudgetExceeded, match="budget of 3"):
        oracle.query(batch(2), torch.tensor([1, 0]))
    assert oracle.queries.tolist() == [3, 1]  # the refused query cost nothing, also for sample 1


def test_budget_refuses_per_sample_in_refuse_mode() -> None:
    oracle = linear_victim().oracle(2, max_queries=2, on_exhausted="refuse")
    out = oracle.query(batch(5), torch.tensor([0, 1, 0, 0, 1]))
    answered = ~out.isnan().any(dim=1)
    assert answered.tolist() == [True, True, True, False, True]
    assert oracle.queries.tolist() == [2, 2]
    labels = linear_victim().oracle(1, output="label", max_queries=1, on_exhausted="refuse")
    assert labels.query(batch(2), torch.tensor([0, 0])).tolist()[1] == -1


def test_empty_and_wholly_refused_queries_count_nothing() -> None:
    free = linear_victim().oracle(2)
    assert free.query(batch(0), torch.zeros(0, dtype=torch.long)).shape == (0, 5)
    assert free.queries.tolist() == [0, 0]
    oracle = linear_victim().oracle(2, max_queries=1, on_exhausted="refuse")
    oracle.query(batch(2), torch.tensor([0, 1]))
    assert bool(oracle.query(batch(3), torch.tensor([1, 0, 1])).isnan().all())
    assert oracle.queries.tolist() == [1, 1]


def test_label_mode_returns_labels_only() -> None:
    victim = linear_victim()
    x = batch(8)
    out = victim.oracle(8, output="label").query(x)
    assert out.dtype == torch.long and out.shape == (8,)
    assert torch.equal(out, victim.predict(x))


def test_score_mode_returns_probabilities() -> None:
    victim = linear_victim()
    x = batch(8)
    probs = victim.oracle(8, output="probs").query(x)
    assert probs.shape == (8, 5)
    assert torch.allclose(probs.sum(dim=1), torch.ones(8))
    assert torch.allclose(probs, victim.logits(x).softmax(dim=1))
    assert bool((probs >= 0).all())


def test_topk_mode_hides_all_but_k_classes() -> None:
    victim = linear_victim()
    x = batch(8)
    out = victim.oracle(8, output="top-k", k=2).query(x)
    assert ((out > 0).sum(dim=1) == 2).all()
    assert torch.equal(out.argmax(dim=1), victim.predict(x))


def test_no_gradient_leaves_the_oracle() -> None:
    oracle = linear_victim().oracle(3, output="logits")
    x = batch(3).requires_grad_(True)
    out = oracle.query(x)
    assert not out.requires_grad and out.grad_fn is None
    with pytest.raises(RuntimeError):
        out.sum().backward()
    assert x.grad is None


def test_postprocessors_run_on_logits_before_the_output_mode() -> None:
    victim = linear_victim()
    x = batch(4)

    def flip(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -logits

    out = victim.oracle(4, output="label", postprocess=[flip]).query(x)
    assert torch.equal(out, victim.logits(x).argmin(dim=1))


def test_bad_arguments_are_config_errors() -> None:
    victim = linear_victim()
    with pytest.raises(ConfigError, match="top-k output needs k"):
        victim.oracle(2, output="top-k")
    with pytest.raises(ConfigError, match="oracle output must be one of"):
        victim.oracle(2, output="gradients")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="idx entries"):
        victim.oracle(2).query(batch(1), torch.tensor([5]))


def test_remaining_takes_the_attacks_cap_and_a_reserve() -> None:
    oracle = linear_victim().oracle(3, max_queries=10)
    oracle.query(batch(6), torch.tensor([0, 0, 0, 0, 1, 1]))
    assert oracle.remaining().tolist() == [6, 8, 10]
    # an attack's own cap of 7 per sample binds where it leaves less than the oracle's budget
    assert oracle.remaining(cap=7).tolist() == [3, 5, 7]
    assert oracle.remaining(torch.tensor([2, 0]), cap=12).tolist() == [10, 6]
    # a reserve is kept back from whichever binds; what is left may go negative
    assert oracle.remaining(cap=7, reserve=4).tolist() == [-1, 1, 3]
    with pytest.raises(ConfigError):
        oracle.remaining(reserve=-1)


def test_remaining_without_a_budget_is_the_attacks_cap_or_unlimited() -> None:
    oracle = linear_victim().oracle(2)
    oracle.query(batch(2), torch.tensor([0, 0]))
    assert oracle.remaining(cap=5, reserve=1).tolist() == [2, 4]
    assert bool((oracle.remaining(reserve=100) > 2**62).all())


def test_budget_is_the_smaller_of_the_attacks_and_the_oracles() -> None:
    assert linear_victim().oracle(1, max_queries=50).budget(200) == 50
    assert linear_victim().oracle(1, max_queries=500).budget(200) == 200
    assert linear_victim().oracle(1).budget(200) == 200
