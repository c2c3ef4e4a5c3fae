"""Split federated learning, simulated in one process: clients that each hold the current bottom C
and their own labelled data, one server holding the top S (Thapa et al.'s SplitFed; the setting of
Li et al., arXiv 2303.08581, reference `zlijingtao/SFL-MEA` `SFL.py`).

A training step of client k: it computes `z = C_k(x)` and sends z **and y**; the server computes
`CE(S(z), y)` (batch mean), updates S, and returns `dL/dz`; the client back-propagates that through its
own C_k and updates it. Clients take their turns one after another (one local epoch each per round,
as the reference's `SFL.py` does); after a round the clients' C_k are averaged, weighted by their data
sizes (FedAvg), and every client starts the next round from the average. With one client and one
round, a step is exactly a step of plain training of the whole model (`tests/attacks/extraction`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.extraction._sfl_split import SplitModel, SplitOracle, split_model
from bastion.core.errors import ConfigError, DataError
from bastion.core.progress import ProgressFn, report
from bastion.core.random import make_generator

__all__ = ["SplitFed"]


class SplitFed:
    """An SFL deployment: `split` (the current global C and the server's S) trained by `clients`.

    Args:
        model: the whole model; it is cut in place (C and S are its own modules, so training them trains it).
        server_layers: n_s, the layers on the server (`split_model`).
        input_shape: (C, H, W) of the inputs.
        clients: each honest client's labelled data (x (N_k, C, H, W) in [0, 1], y (N_k,)).
        lr: SGD learning rate of the server and of every client.
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        batch_size: images per client step.
        seed: seeds every client's shuffling.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        server_layers: int,
        input_shape: tuple[int, int, int],
        clients: Sequence[tuple[Tensor, Tensor]],
        lr: float = 0.02,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        batch_size: int = 128,
        seed: int = 0,
    ) -> None:
        if not clients:
            raise ConfigError("split federated learning needs at least one client")
        if not lr > 0 or batch_size < 1:
            raise ConfigError(f"lr must be > 0 and batch_size >= 1; got lr={lr}, batch_size={batch_size}")
        for k, (x, y) in enumerate(clients):
            if x.shape[0] < 1 or y.shape != (x.shape[0],):
                raise DataError(f"client {k}: needs images (N, C, H, W) with N >= 1 and labels (N,)")
        self.split: SplitModel = split_model(model, server_layers, input_shape)
        self.device = next(model.parameters()).device
        self._clients = [(x.to(self.device), y.to(self.device).long()) for x, y in clients]
        self._opt = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        self._server_opt = torch.optim.SGD(self.split.server.parameters(), **self._opt)
        self.batch_size = batch_size
        self._gen = make_generator(seed, self.device)
        self.rounds = 0  # rounds finished (FedAvg done)
        self.steps = 0  # honest client steps taken
        self._schedule = self._run()

    # --- the server ----------------------------------------------------------------------------------
    def _server_step(self, z: Tensor, y: Tensor) -> Tensor:
        """The server's side of a step: dCE_i/dz_i per row is returned and S takes an SGD step on the
        batch-mean loss (the gradient the client needs for a mean loss is the returned one divided by N)."""
        server = self.split.server.train()
        with torch.enable_grad():
            z = z.detach().clone().requires_grad_(True)
            loss = F.cross_entropy(server(z), y, reduction="sum")
            self._server_opt.zero_grad(set_to_none=True)
            loss.backward()
        for p in server.parameters():
            if p.grad is not None:
                p.grad /= z.shape[0]
        self._server_opt.step()
        self._server_opt.zero_grad(set_to_none=True)
        assert z.grad is not None
        return z.grad.detach()

    def _client_step(self, client: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
        z = client(x)  # (N, *z_shape)
        g = self._server_step(z, y)  # what the server sends back: dCE_i/dz_i
        opt.zero_grad(set_to_none=True)
        z.backward(g / x.shape[0])  # the client's part of d mean CE
        opt.step()

    # --- rounds ----------------------------------------------------------------------------------------
    def _run(self) -> Iterator[bool]:
        """Yields True after every honest client step and False after every FedAvg (forever)."""
        glob = self.split.client
        while True:
            states, sizes = [], []
            for x, y in self._clients:
                local = copy.deepcopy(glob).train()
                opt = torch.optim.SGD(local.parameters(), **self._opt)
                order = torch.randperm(x.shape[0], generator=self._gen, device=self.device)
                for i in range(0, x.shape[0], self.batch_size):
                    idx = order[i : i + self.batch_size]
                    self._client_step(local, opt, x[idx], y[idx])
                    self.steps += 1
                    yield True
                states.append(local.state_dict())
                sizes.append(x.shape[0])
            _fedavg(glob, states, sizes)
            self.rounds += 1
            yield False

    def train(self, rounds: int, *, progress: ProgressFn | None = None) -> None:
        """Run `rounds` more rounds (every client one local epoch, then FedAvg); leaves the model in eval mode."""
        target = self.rounds + rounds
        while self.rounds < target:
            if not next(self._schedule):
                report(progress, "sfl", self.rounds, target)
        self.split.client.eval()
        self.split.server.eval()

    def honest_steps(self, n: int) -> None:
        """Let the honest clients take `n` more steps (finishing rounds and averaging as they go)."""
        taken = 0
        while taken < n:
            taken += int(next(self._schedule))

    def oracle(self, *, budget: int | None, honest_steps: int = 1) -> SplitOracle:
        """An online oracle: before answering, the honest clients take `honest_steps` steps; then the
        server answers the rows with its current S and trains on them, as it does on any client's."""
        if honest_steps < 0:
            raise ConfigError(f"honest_steps must be >= 0; got {honest_steps}")

        def answer(z: Tensor, y: Tensor) -> Tensor:
            self.honest_steps(honest_steps)
            was = self.split.client.training
            g = self._server_step(z.to(self.device), y.to(self.device))
            self.split.client.train(was)
            return g

        sp = self.split
        return SplitOracle(answer, z_shape=sp.z_shape, num_classes=sp.num_classes, budget=budget, mode="online")


@torch.no_grad()
def _fedavg(target: nn.Module, states: list[dict[str, Tensor]], sizes: list[int]) -> None:
    """Set `target`'s parameters and buffers to the data-size-weighted average of `states`."""
    total = float(sum(sizes))
    for name, value in target.state_dict().items():
        if value.is_floating_point():
            value.copy_(sum(s[name] * (n / total) for s, n in zip(states, sizes, strict=True)))
        else:  # BatchNorm's step counter: the largest
            value.copy_(torch.stack([s[name] for s in states]).max())
