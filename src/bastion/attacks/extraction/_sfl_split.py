"""Cutting a sequential model into a client-side bottom C and a server-side top S, and the server as a
malicious client sees it: `SplitOracle`, whose only answer is the gradient of the server's loss with
respect to the activations a client sent.

Layers are counted as the SFL-MEA reference's `resplit` counts them (Li et al., arXiv 2303.08581;
`zlijingtao/SFL-MEA`, branch `old-commit`, `SFL.py`): a convolution, a max-pooling or a linear module
is one layer; every other module (normalisation, BatchNorm, ReLU, flatten, average pooling) belongs to
the layer before it. `server_layers = n_s` puts the last n_s layers, and everything after them, on the
server. For `small_cnn` (conv1, pool1, conv2, pool2, fc1, fc2) `n_s = 3` cuts after conv2 and its ReLU:
the server holds pool2, flatten, fc1, ReLU, fc2 and the client sends z of shape (64, s/2, s/2).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.core.errors import ConfigError, DataError, ModelError, QueryBudgetExceeded

__all__ = ["LAYER_TYPES", "SplitModel", "SplitOracle", "count_layers", "split_model"]

LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.MaxPool2d, nn.Linear)
"""What counts as a layer (the reference's `resplit`: conv, max-pool and linear modules)."""


def _leaves(model: nn.Module) -> list[nn.Module]:
    """The modules a sequential model applies in order, nested `nn.Sequential`s opened."""
    if not isinstance(model, nn.Sequential):
        raise ModelError(
            f"only a sequential model (nn.Sequential, nested ones allowed) can be split; got {type(model).__name__} "
            "(small_cnn, lenet, mlp and vgg11_bn are sequential)"
        )
    out: list[nn.Module] = []
    for child in model.children():
        out += _leaves(child) if isinstance(child, nn.Sequential) else [child]
    return out


def count_layers(model: nn.Module) -> int:
    """The number of layers (conv, max-pool, linear modules) of a sequential model."""
    return sum(isinstance(m, LAYER_TYPES) for m in _leaves(model))


@dataclass(frozen=True)
class SplitModel:
    """A model cut in two: `client` (C, the bottom) and `server` (S, the top); `server(client(x))` is the
    model's output, computed by the very same modules (nothing is copied).

    Attributes:
        client: C, inputs (N, *input_shape) in [0, 1] to activations z (N, *z_shape).
        server: S, activations z to logits (N, K).
        server_layers: n_s, the layers on the server.
        total_layers: the layers of the whole model.
        input_shape: (C, H, W) of the inputs.
        z_shape: the shape of one row of activations (the "smashed data").
        num_classes: K.
    """

    client: nn.Sequential
    server: nn.Sequential
    server_layers: int
    total_layers: int
    input_shape: tuple[int, int, int]
    z_shape: tuple[int, ...]
    num_classes: int

    def whole(self) -> nn.Sequential:
        """C followed by S, as one module (the same modules, so the same weights)."""
        return nn.Sequential(*self.client, *self.server)

    @torch.inference_mode()
    def predict(self, x: Tensor, *, server: nn.Module | None = None, batch_size: int = 500) -> Tensor:
        """Labels (N,) of S(C(x)) in eval mode, or of `server`(C(x)) for another top (a surrogate)."""
        top = self.server if server is None else server
        modes = [(m, m.training) for m in (self.client, top)]
        self.client.eval()
        top.eval()
        device = next(self.client.parameters(), next(top.parameters())).device
        out = [top(self.client(x[i : i + batch_size].to(device))).argmax(1) for i in range(0, x.shape[0], batch_size)]
        for m, was in modes:
            m.train(was)
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=device)


def split_model(model: nn.Module, server_layers: int, input_shape: tuple[int, int, int]) -> SplitModel:
    """Cut `model` so that its last `server_layers` layers (conv, max-pool, linear) run on the server.

    Args:
        model: a sequential classifier (nested `nn.Sequential`s allowed), inputs in [0, 1].
        server_layers: n_s, from 1 to the number of layers minus 1 (the client keeps at least one).
        input_shape: (C, H, W) of one input, used to find the shape of the activations.

    Raises:
        ModelError: the model is not sequential.
        ConfigError: `server_layers` leaves no layer on one side.
    """
    leaves = _leaves(model)
    where = [i for i, m in enumerate(leaves) if isinstance(m, LAYER_TYPES)]
    if not 1 <= server_layers <= len(where) - 1:
        raise ConfigError(
            f"server_layers must be between 1 and {len(where) - 1} (the model has {len(where)} conv, max-pool and "
            f"linear layers and the client keeps at least one); got {server_layers}"
        )
    cut = where[len(where) - server_layers]
    client, server = nn.Sequential(*leaves[:cut]), nn.Sequential(*leaves[cut:])
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    with torch.inference_mode():
        z = client(torch.zeros(1, *input_shape, device=device))
        logits = server(z)
    model.train(was)
    return SplitModel(
        client=client,
        server=server,
        server_layers=server_layers,
        total_layers=len(where),
        input_shape=tuple(input_shape),  # type: ignore[arg-type]
        z_shape=tuple(z.shape[1:]),
        num_classes=int(logits.shape[1]),
    )


def row_gradients(server: nn.Module, z: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """`dCE(S(z_i), y_i)/dz_i` for every row (N, *z_shape), and the summed loss (autograd graph kept).

    With S in eval mode the rows do not interact, so the gradient of the summed loss is the per-row one.
    Only z's gradient is computed: the server's parameters receive nothing.
    """
    with torch.enable_grad():
        z = z.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(server(z), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, z, retain_graph=True)
    return g.detach(), loss


class SplitOracle:
    """The SFL server as a (malicious) client sees it: send activations z and labels y, get back
    `dCE(S(z_i), y_i)/dz_i` for every row. Nothing else ever leaves: no logits, no prediction, no weight.

    Every answered row is one gradient query; with a `budget`, a call that would pass it raises
    `QueryBudgetExceeded` before anything is answered. `offline` answers from a fixed trained server (a
    private copy, so later changes to the caller's module do not leak in); `SplitFed.oracle` gives the
    `online` kind, whose server keeps training (on every client's rows, the attacker's included).

    The server lives only inside a private closure: the public attributes (`queries`, `budget`,
    `remaining`, `mode`, `num_classes`, `z_shape`, `grad`) hold no module and no parameter.
    """

    __slots__ = ("_answer", "_queries", "budget", "mode", "num_classes", "z_shape")

    def __init__(
        self,
        answer: Callable[[Tensor, Tensor], Tensor],
        *,
        z_shape: tuple[int, ...],
        num_classes: int,
        budget: int | None,
        mode: Literal["offline", "online"],
    ) -> None:
        if budget is not None and budget < 0:
            raise ConfigError(f"a gradient-query budget must be >= 0 or None; got {budget}")
        self._answer = answer
        self._queries = 0
        self.budget = budget
        self.mode = mode
        self.num_classes = num_classes
        self.z_shape = tuple(z_shape)

    @classmethod
    def offline(cls, split: SplitModel, *, budget: int | None) -> SplitOracle:
        """An oracle answering from a frozen copy of `split.server` in eval mode."""
        server = copy.deepcopy(split.server).eval()
        for p in server.parameters():
            p.requires_grad_(False)  # z's gradient flows through the weights; the weights get none

        def answer(z: Tensor, y: Tensor) -> Tensor:
            return row_gradients(server, z, y)[0]

        return cls(answer, z_shape=split.z_shape, num_classes=split.num_classes, budget=budget, mode="offline")

    @property
    def queries(self) -> int:
        """Gradient rows answered so far."""
        return self._queries

    @property
    def remaining(self) -> int | None:
        """Rows that may still be sent (None: no budget)."""
        return None if self.budget is None else self.budget - self._queries

    def grad(self, z: Tensor, y: Tensor) -> Tensor:
        """`dCE(S(z_i), y_i)/dz_i` (N, *z_shape) for activations z (N, *z_shape) and labels y (N,)."""
        if tuple(z.shape[1:]) != self.z_shape or z.dim() != len(self.z_shape) + 1:
            raise DataError(
                f"activations must have shape (N, {', '.join(map(str, self.z_shape))}); got {tuple(z.shape)}"
            )
        if y.dim() != 1 or y.shape[0] != z.shape[0]:
            raise DataError(f"labels must have shape ({z.shape[0]},); got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise DataError(f"labels must lie in [0, {self.num_classes}); got [{int(y.min())}, {int(y.max())}]")
        n = int(z.shape[0])
        if self.budget is not None and self._queries + n > self.budget:
            raise QueryBudgetExceeded(
                f"gradient query of {n} rows refused: {self._queries} of the budget of {self.budget} are spent"
            )
        g = self._answer(z.detach(), y.detach().long())
        self._queries += n
        return g.clone()
