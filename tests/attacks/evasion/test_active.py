"""The active set of the score-based attacks: who leaves it, what they leave behind, what is traced."""

import torch
from torch import nn

from bastion.attacks.evasion._active import Retire, State, rows
from bastion.attacks.evasion._trace import QueryTrace
from bastion.core import Victim


def setup(max_queries: int | None = None) -> tuple[Retire, State, QueryTrace]:
    victim = Victim(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), input_shape=(1, 2, 2))
    oracle = victim.oracle(4, output="label", max_queries=max_queries)
    x = torch.arange(16.0).view(4, 1, 2, 2) / 16
    oracle.query(x[[0, 0, 0, 1, 2]], torch.tensor([0, 0, 0, 1, 2]))  # queries spent: 3, 1, 1, 0
    trace = QueryTrace(4, eps=1.0, device=torch.device("cpu"))
    retire = Retire(torch.zeros_like(x), lambda s: s["x"] + s["delta"], oracle, trace)
    st = {"ids": torch.arange(4), "x": x, "delta": torch.full_like(x, 0.5)}
    return retire, st, trace


def test_rows_selects_every_entry() -> None:
    st = {"ids": torch.arange(3), "v": torch.tensor([[1.0], [2.0], [3.0]])}
    out = rows(st, torch.tensor([True, False, True]))
    assert out["ids"].tolist() == [0, 2] and out["v"].flatten().tolist() == [1.0, 3.0]


def test_fooled_samples_leave_with_their_image_and_are_traced() -> None:
    retire, st, trace = setup()
    left = retire.fooled(st, torch.tensor([True, False, True, False]))
    assert left["ids"].tolist() == [1, 3] and set(left) == set(st)
    assert torch.equal(retire.x_adv[[0, 2]], st["x"][[0, 2]] + 0.5)
    assert float(retire.x_adv[[1, 3]].abs().sum()) == 0.0  # the others keep what the attack wrote
    assert retire.succeeded.tolist() == [True, False, True, False]
    assert trace.first.tolist() == [3, -1, 1, -1]  # traced at the queries each had paid


def test_nothing_fooled_changes_nothing() -> None:
    retire, st, trace = setup()
    assert retire.fooled(st, torch.zeros(4, dtype=torch.bool)) is st
    assert not bool(retire.succeeded.any()) and trace.first.tolist() == [-1] * 4


def test_samples_that_cannot_afford_a_step_leave_untraced() -> None:
    retire, st, trace = setup(max_queries=4)
    # an attack's cap of 3 leaves 0, 2, 2, 3 queries; a step of 2 is beyond sample 0 only
    left = retire.spent(st, 2, cap=3)
    assert left["ids"].tolist() == [1, 2, 3]
    assert torch.equal(retire.x_adv[0], st["x"][0] + 0.5)
    assert not bool(retire.succeeded.any()) and trace.first.tolist() == [-1] * 4
    # without the cap the oracle's budget of 4 binds: 1, 3, 3, 4 left
    assert retire.spent(left, 4)["ids"].tolist() == [3]
    assert retire.spent(st, 1) is st
