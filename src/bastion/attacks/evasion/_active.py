"""The active set of the score-based attacks (`square`, `simba`, `nes`, `bandits`), and the one way a sample
leaves it.

Each of these attacks keeps the samples it still works on as rows of per-sample tensors (a `State`), so that
every query holds only those samples and a sample's query count stops the moment it is done. A sample leaves
in one of two ways: an answer it paid for shows it fooled, or it cannot afford its next step within the
attack's and the oracle's budgets. Either way its current image becomes its result; only a fooled sample goes
to the query trace, with the queries it took. `Retire` does both, so that no attack records its results,
budgets or trace its own way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from bastion.attacks.evasion._trace import QueryTrace
from bastion.core.oracle import Oracle

__all__ = ["Retire", "State", "rows"]

State = dict[str, Tensor]  # one row per active sample in every entry; "ids": the samples' indices in the run


def rows(st: State, keep: Tensor) -> State:
    """The rows `keep` (a mask or indices) of every entry of `st`."""
    if keep.dtype == torch.bool:  # indices once: each entry masked on its own would wait for the device again
        keep = keep.nonzero().squeeze(1)
    return {k: v[keep] for k, v in st.items()}


class Retire:
    """Where the samples leaving an active set go.

    Args:
        x_adv: the run's results (N, C, H, W), indexed by a state's "ids"; a sample that never leaves keeps
            whatever the attack writes there itself.
        image: the current image of each row of a state, from the attack's own representation (an image, a
            perturbation of the clean one, a sign pattern...); it is computed for the leaving rows only.
        oracle: the oracle the samples' queries go to (budgets and query counts).
        trace: the run's query-efficiency records, or None.

    Attributes:
        succeeded: (N,) whether each sample left fooled.
    """

    def __init__(
        self, x_adv: Tensor, image: Callable[[State], Tensor], oracle: Oracle, trace: QueryTrace | None
    ) -> None:
        self.x_adv, self.image, self.oracle, self.trace = x_adv, image, oracle, trace
        self.succeeded = torch.zeros(x_adv.shape[0], dtype=torch.bool, device=x_adv.device)

    def fooled(self, st: State, fooled: Tensor) -> State:
        """The state without the rows `fooled` (M,) bool, whose images become results, traced at their query count."""
        if not bool(fooled.any()):
            return st
        done = self._leave(st, fooled)
        self.succeeded[done] = True
        if self.trace is not None:
            self.trace.adversarial(done, self.oracle.queries[done])
        return rows(st, ~fooled)

    def spent(self, st: State, cost: int, cap: int | None = None) -> State:
        """The state without the rows that cannot afford `cost` more queries (see `Oracle.remaining`; `cap`: the
        attack's own per-sample budget); their current images become their results."""
        broke = self.oracle.remaining(st["ids"], cap=cap) < cost
        if not bool(broke.any()):
            return st
        self._leave(st, broke)
        return rows(st, ~broke)

    def _leave(self, st: State, leaving: Tensor) -> Tensor:
        """Write the current images of the rows `leaving` into the results; their sample indices."""
        gone = rows(st, leaving)
        self.x_adv[gone["ids"]] = self.image(gone)
        return gone["ids"]
