"""Oracle: the black-box view of a victim, as a deployed API would be.

Outputs are probabilities, logits, the top-k probabilities or the label only; post-processors
(output defenses) run on the logits before that; every answered query is counted per sample; a
query past a sample's budget raises or is refused, never silently answered; no gradient leaves.

The oracle answers from any `Model`: an in-process `Victim`, or a deployed model known by its answers
alone (an ONNX file, an HTTP endpoint: `bastion.deploy`). Such a model says what it `reveals`
(logits, probabilities or labels), and the oracle serves nothing richer than that: the accounting,
budgets, post-processors and output modes are this one implementation, whatever answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, get_args

import torch
from torch import Tensor

from bastion.core.errors import ConfigError, DataError, QueryBudgetExceeded

__all__ = ["BlackBoxModel", "ExhaustedPolicy", "Model", "Oracle", "OutputMode", "PostProcessor", "Reveals"]

OutputMode = Literal["probs", "logits", "top-k", "label"]
ExhaustedPolicy = Literal["raise", "refuse"]
# What a model's answers reveal: its logits, its probabilities (logits up to a per-row constant: the oracle
# reads their logarithm as logits), or its label only.
Reveals = Literal["logits", "probs", "label"]


class PostProcessor(Protocol):
    """An output defense: maps the model's logits (N, K) for inputs x (N, C, H, W) to new logits (N, K)."""

    def __call__(self, logits: Tensor, x: Tensor) -> Tensor: ...


class Model(Protocol):
    """What an oracle answers from: a classifier's logits without gradients, its device, bounds and classes.

    A `bastion.core.victim.Victim` is one (and `Victim.oracle` is how callers get an oracle); the oracle needs
    no more of it, so it depends on this protocol alone and the victim module on the oracle, never back.

    A model may say what its answers reveal with a `reveals` attribute (`Reveals`; absent: `"logits"`).
    One that reveals `"probs"` returns log-probabilities from `logits` (softmax gives the probabilities
    back; differences between classes are the logits' own); one that reveals `"label"` answers through
    `predict(x) -> (N,) int64` and is never asked for logits.
    """

    @property
    def device(self) -> torch.device: ...

    @property
    def bounds(self) -> tuple[float, float]: ...

    @property
    def num_classes(self) -> int: ...

    def logits(self, x: Tensor) -> Tensor:
        """Logits (N, K) of inputs x (N, C, H, W), with no autograd history."""
        ...


class BlackBoxModel(Model, Protocol):
    """A model known only by its answers (`bastion.deploy`: an ONNX file, an HTTP endpoint): what
    `EvasionAttack.run` and an audit need of a model they may query but not differentiate."""

    @property
    def reveals(self) -> Reveals: ...

    @property
    def input_shape(self) -> tuple[int, int, int] | None: ...

    def check_input(self, x: Tensor) -> None:
        """Raise `DataError` unless `x` is a batch the model takes."""
        ...

    def predict(self, x: Tensor) -> Tensor:
        """Predicted labels (N,), int64."""
        ...

    def oracle(
        self,
        n: int,
        *,
        output: OutputMode = "probs",
        k: int | None = None,
        postprocess: Sequence[PostProcessor] = (),
        max_queries: int | None = None,
        on_exhausted: ExhaustedPolicy = "raise",
    ) -> Oracle:
        """A black-box view of the model for `n` samples; see `Oracle`."""
        ...


class Oracle:
    """Black-box access to a model (a `Victim`) for a batch of `n` samples, with per-sample query accounting.

    Each row of a query belongs to one of the `n` samples (`idx`); answering it costs that sample one
    query. Output modes:
        probs: softmax probabilities (N, K);
        logits: raw logits (N, K);
        top-k: probabilities of the k most likely classes, every other entry 0 (N, K);
        label: the predicted class (N,), int64.
    With `max_queries`, a query that would take a sample past its budget raises `QueryBudgetExceeded`
    before anything is answered (`on_exhausted="raise"`), or that sample's excess rows are refused:
    they come back as NaN (label mode: -1) and are not counted (`on_exhausted="refuse"`).
    A query counts once its answer is back: a query the model fails to answer (an endpoint that keeps
    failing after its retries raises `EndpointError`) costs nothing, and a request the model's client
    retried is still one query.

    A model that reveals labels only serves `label` output alone, without post-processors (they act on
    scores); asking it for scores raises `ConfigError` (a score-based attack cannot run on it).

    An API with one budget for all its queries (model extraction: the attacker's total budget B) is an
    oracle with `n=1` and `max_queries=B`: every row of every query belongs to sample 0, so the count of
    that one sample is the total and the per-sample budget is the total budget.

    Args:
        victim: the model behind the API.
        n: the number of samples under attack.
        output: what a query returns.
        k: the number of classes shown in `top-k` mode.
        postprocess: output defenses, applied in order to the logits.
        max_queries: the per-sample budget (`None`: unlimited).
        on_exhausted: what a query past the budget does.
    """

    def __init__(
        self,
        victim: Model,
        n: int,
        *,
        output: OutputMode = "probs",
        k: int | None = None,
        postprocess: Sequence[PostProcessor] = (),
        max_queries: int | None = None,
        on_exhausted: ExhaustedPolicy = "raise",
    ) -> None:
        if output not in get_args(OutputMode):
            raise ConfigError(f"oracle output must be one of {', '.join(get_args(OutputMode))}; got {output!r}")
        if on_exhausted not in get_args(ExhaustedPolicy):
            raise ConfigError(f"on_exhausted must be 'raise' or 'refuse'; got {on_exhausted!r}")
        if output == "top-k" and (k is None or k < 1):
            raise ConfigError(f"top-k output needs k >= 1; got k={k}")
        if n < 0:
            raise ConfigError(f"the number of samples must be >= 0; got {n}")
        if max_queries is not None and max_queries < 0:
            raise ConfigError(f"max_queries must be >= 0 or None; got {max_queries}")
        reveals = getattr(victim, "reveals", "logits")
        if reveals not in get_args(Reveals):
            raise ConfigError(f"a model reveals one of {', '.join(get_args(Reveals))}; got {reveals!r}")
        if reveals == "label" and output != "label":
            raise ConfigError(
                f"the model answers with labels only, so it cannot serve {output} queries: run a decision-based "
                "attack (e.g. hsja, cgba, sign-opt), or serve probabilities"
            )
        if reveals == "label" and postprocess:
            raise ConfigError("output post-processors act on scores, but the model answers with labels only")
        self._victim = victim
        self.reveals: Reveals = reveals
        self.n = n
        self.output = output
        self.k = k
        self.postprocess = tuple(postprocess)
        self.max_queries = max_queries
        self.on_exhausted = on_exhausted
        self._queries = torch.zeros(n, dtype=torch.long, device=victim.device)

    @property
    def queries(self) -> Tensor:
        """Queries answered so far, per sample (n,)."""
        return self._queries.clone()

    @property
    def device(self) -> torch.device:
        return self._victim.device

    @property
    def bounds(self) -> tuple[float, float]:
        return self._victim.bounds

    @property
    def num_classes(self) -> int:
        return self._victim.num_classes

    def remaining(self, idx: Tensor | None = None, *, cap: int | None = None, reserve: int = 0) -> Tensor:
        """Queries samples `idx` (default: all n) may still send, per sample: the one budget arithmetic of
        every attack, so that none of them can exceed a budget by computing it its own way.

        Args:
            idx: the samples asked about.
            cap: an attack's own per-sample budget (its `n_queries`), counted from this oracle's first query
                and applied on top of the oracle's; `None`: the oracle's budget alone.
            reserve: queries kept back for a later step (e.g. a final check), subtracted from what is left.

        Returns:
            (M,) int64: the smaller of the oracle's and the attack's budget left, minus `reserve` (negative
            when less than the reserve is left); without any budget, a number near the int64 maximum.
        """
        if reserve < 0:
            raise ConfigError(f"a query reserve must be >= 0; got {reserve}")
        q = self._queries if idx is None else self._queries[idx.to(self._queries.device)]
        left = torch.full_like(q, torch.iinfo(torch.long).max) if self.max_queries is None else self.max_queries - q
        if cap is not None:
            left = torch.minimum(left, cap - q)
        return left - reserve

    def budget(self, cap: int) -> int:
        """The per-sample budget of an attack whose own budget is `cap`: `cap`, or the oracle's when smaller."""
        return cap if self.max_queries is None else min(cap, self.max_queries)

    def query(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        """Answer the rows of `x` (M, C, H, W); row i belongs to sample `idx[i]` (default: row i is sample i)."""
        if idx is None:
            if x.shape[0] != self.n:
                raise DataError(f"a query of {x.shape[0]} rows needs idx naming each row's sample (n={self.n})")
            idx = torch.arange(self.n, device=self._queries.device)
        idx = idx.to(device=self._queries.device, dtype=torch.long)
        if idx.dim() != 1 or idx.shape[0] != x.shape[0]:
            raise DataError(f"idx must have one entry per row of x ({x.shape[0]}); got shape {tuple(idx.shape)}")
        if idx.numel() and bool(((idx < 0) | (idx >= self.n)).any()):
            raise DataError(f"idx entries must lie in [0, {self.n}); got [{idx.min().item()}, {idx.max().item()}]")
        answered = None if self.max_queries is None else self._admit(idx)
        if idx.numel() and (answered is None or bool(answered.all())):
            # every row is answered: x goes to the model as it is (no masked copy), and the count needs no
            # bincount (which waits for the device to size its output)
            out = self._answer(x.contiguous())
            self._queries.index_add_(0, idx, torch.ones_like(idx))
            return out
        # rows refused (or none sent): answer the others, fill the refused rows
        fill: float | int = -1 if self.output == "label" else float("nan")
        shape = (x.shape[0],) if self.output == "label" else (x.shape[0], self.num_classes)
        dtype = torch.long if self.output == "label" else torch.float32
        full = torch.full(shape, fill, dtype=dtype, device=self.device)
        if answered is not None and bool(answered.any()):
            out = self._answer(x[answered.to(x.device)])
            self._queries += torch.bincount(idx[answered], minlength=self.n)
            full[answered.to(self.device)] = out.to(dtype)
        return full

    def _admit(self, idx: Tensor) -> Tensor:
        """Which rows fit in their sample's budget (counting earlier rows of the same query first)."""
        if self.max_queries is None:
            return torch.ones_like(idx, dtype=torch.bool)
        # rank of each row among the rows of the same sample, in row order
        order = torch.argsort(idx, stable=True)
        sorted_idx = idx[order]
        _, counts = torch.unique_consecutive(sorted_idx, return_counts=True)
        starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        rank = torch.empty_like(idx)
        rank[order] = torch.arange(idx.numel(), device=idx.device) - starts
        answered = self._queries[idx] + rank < self.max_queries
        if self.on_exhausted == "raise" and not bool(answered.all()):
            over = torch.unique(idx[~answered])
            raise QueryBudgetExceeded(
                f"query refused: {over.numel()} sample(s) (first: {over[0].item()}) would exceed the budget of "
                f"{self.max_queries} queries per sample"
            )
        return answered

    @torch.inference_mode()
    def _answer_inference(self, x: Tensor) -> Tensor:
        x = x.detach()
        if self.reveals == "label":
            return self._victim.predict(x)  # type: ignore[attr-defined, no-any-return]
        logits = self._victim.logits(x)
        for post in self.postprocess:
            logits = post(logits, x)
        if self.output == "logits":
            return logits
        if self.output == "label":
            return logits.argmax(dim=1)
        probs = logits.softmax(dim=1)
        if self.output == "top-k":
            assert self.k is not None
            top = probs.topk(min(self.k, probs.shape[1]), dim=1)
            probs = torch.zeros_like(probs).scatter_(1, top.indices, top.values)
        return probs

    def _answer(self, x: Tensor) -> Tensor:
        # a plain tensor (not an inference tensor) with no autograd history
        return self._answer_inference(x).clone()
