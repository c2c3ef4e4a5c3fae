"""Differential tests: `bfa` and `t-bfa` pick the same bits as their references, re-expressed here in
the references' own formulation (int2bin / bin2int, the bit-weight column `b_w = [-128, 64, ..., 1]`,
the xor gradient mask, `topk` over the (8, k) bit-gradient matrix, their search loops). The references
themselves are not installed (they need torchvision, CUDA and their data sets).

- BFA: `elliothe/Neural_Network_Weight_Attack`, `attack/BFA.py` (`flip_bit`, `progressive_bit_search`,
  the `while loss_max <= loss` loop) and `attack/data_conversion.py`.
- T-BFA: `adnansirajrakin/T-BFA`, `attack.py` (`BFA1.flip_bit` with the inverted mask
  `1 - (bit ^ sign)` and `k_top` set to the layer's size, `progressive_bit_search` for types 1 and 2,
  `progressive_bit_search1` for type 3: one bit per iteration, the layer of lowest loss committed
  whatever its loss, type 3's second term a constant in the backward pass)."""

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.weights import BFA, TBFA, quantize_int8
from bastion.core import Victim
from bastion.data import Dataset

N_BITS = 8
B_W = (2 ** torch.arange(N_BITS - 1, -1, -1)).unsqueeze(-1).float()  # (8, 1), MSB first
B_W[0] = -B_W[0]


def int2bin(x: Tensor) -> Tensor:
    out = x.clone()
    out[x.lt(0)] = 2**N_BITS + out[x.lt(0)]
    return out


def bin2int(x: Tensor) -> Tensor:
    mask = 2 ** (N_BITS - 1) - 1
    return -(x & ~mask) + (x & mask)


def flip_bit(w: Tensor, grad: Tensor, k_top: int, n_bits2flip: int, *, targeted: bool = False) -> Tensor:
    """The reference's `flip_bit` on integer-valued weights `w` and their gradient; `targeted`: T-BFA's
    `BFA1.flip_bit`, whose mask keeps the bits that lower the loss."""
    _, w_idx_topk = grad.abs().view(-1).topk(k_top)
    b_grad_topk = grad.view(-1)[w_idx_topk] * B_W  # (8, k)
    b_grad_topk_sign = (b_grad_topk.sign() + 1) * 0.5
    w_bin = int2bin(w.view(-1)).short()
    w_bin_topk = w_bin[w_idx_topk]
    b_abs = B_W.abs().repeat(1, k_top).short()
    b_bin_topk = (w_bin_topk.repeat(N_BITS, 1) & b_abs) // b_abs
    grad_mask = b_bin_topk ^ b_grad_topk_sign.short()
    if targeted:
        grad_mask = (torch.ones(grad_mask.size()).short() - grad_mask).short()
    b_grad_topk = b_grad_topk * grad_mask.float()
    grad_max = b_grad_topk.abs().max()
    _, b_grad_max_idx = b_grad_topk.abs().view(-1).topk(n_bits2flip)
    bit2flip = b_grad_topk.clone().view(-1).zero_()
    if grad_max.item() != 0:
        bit2flip[b_grad_max_idx] = 1
    bit2flip = bit2flip.view(b_grad_topk.size())
    flipped = (bit2flip.short() * B_W.abs().short()).sum(0, dtype=torch.int16) ^ w_bin_topk
    w_bin[w_idx_topk] = flipped
    return bin2int(w_bin).view(w.size()).float()


def changed_bits(layer: str, before: Tensor, after: Tensor) -> list[tuple[str, int, int]]:
    """The (layer, index, bit) that differ between two integer-valued weight tensors."""
    diff = (int2bin(before.view(-1)).short() ^ int2bin(after.view(-1)).short()).to(torch.int64)
    return [(layer, i, b) for i in diff.nonzero().flatten().tolist() for b in range(N_BITS) if (int(diff[i]) >> b) & 1]


def reference_bfa(model: nn.Module, x: Tensor, iterations: int, k_top: int) -> list[tuple[str, int, int]]:
    """The reference's attack loop on an 8-bit copy; returns the flips as (layer, index, bit)."""
    q = quantize_int8(model)
    ints = {name: layer.codes.float() for name, layer in q.layers.items()}  # what the reference stores
    scales = {name: layer.scale for name, layer in q.layers.items()}

    def load(name: str, w: Tensor) -> None:
        with torch.no_grad():
            q.layers[name].weight.copy_(w * scales[name])

    def loss_of(y: Tensor) -> Tensor:
        return F.cross_entropy(q.model(x), y)

    with torch.no_grad():
        y = q.model(x).max(1)[1]  # "override the target to prevent label leaking"
    flips = []
    for _ in range(iterations):
        loss = loss_of(y)
        grads = torch.autograd.grad(loss, [q.layers[n].weight for n in ints])
        grads_v = {n: g * scales[n] for n, g in zip(ints, grads, strict=True)}  # d loss / d integer weight
        loss_max, n_bits2flip, losses = loss.item(), 0, {}
        while loss_max <= loss.item():
            n_bits2flip += 1
            for name in ints:
                load(name, flip_bit(ints[name], grads_v[name], k_top, n_bits2flip))
                with torch.no_grad():
                    losses[name] = loss_of(y).item()
                load(name, ints[name])
            best = max(losses.items(), key=lambda kv: kv[1])[0]
            loss_max = losses[best]
        new = flip_bit(ints[best], grads_v[best], k_top, n_bits2flip)
        flips += changed_bits(best, ints[best], new)
        ints[best] = new
        load(best, new)
    return flips


def test_bfa_flips_the_bits_the_reference_flips(digits_model: nn.Module, digits_data: Dataset) -> None:
    victim = Victim(digits_model, input_shape=(1, 8, 8))
    x_attack = digits_data.x_train[:64]  # the whole pool: both draw the same batch, in another order
    ours = BFA(max_flips=8, batch_size=64, seed=0).run(
        victim, digits_data.x_test[:50], digits_data.y_test[:50], x_attack=x_attack
    )
    theirs = reference_bfa(digits_model, x_attack, iterations=len(ours.extra["steps"]), k_top=10)
    assert [(f.layer, f.index, f.bit) for f in ours.flips] == theirs[: ours.n_flips]


def reference_tbfa(
    model: nn.Module, x: Tensor, y: Tensor, rest: tuple[Tensor, Tensor] | None, iterations: int
) -> list[tuple[str, int, int]]:
    """The reference's attack loop (types 1-2, or 3 with `rest`) on a copy quantized with its step."""
    q = quantize_int8(model, scheme="tbfa")
    ints = {name: layer.codes.float() for name, layer in q.layers.items()}
    scales = {name: layer.scale for name, layer in q.layers.items()}

    def load(name: str, w: Tensor) -> None:
        with torch.no_grad():
            q.layers[name].weight.copy_(w * scales[name])

    flips = []
    for _ in range(iterations):
        loss = F.cross_entropy(q.model(x), y)
        if rest is not None:
            loss = loss + F.cross_entropy(q.model(rest[0]), rest[1]).item()  # a constant, as in the reference
        grads = torch.autograd.grad(loss, [q.layers[n].weight for n in ints])
        grads_v = {n: g * scales[n] for n, g in zip(ints, grads, strict=True)}
        losses = {}
        for name in ints:
            load(name, flip_bit(ints[name], grads_v[name], grads_v[name].numel(), 1, targeted=True))
            with torch.no_grad():
                losses[name] = F.cross_entropy(q.model(x), y).item()
                if rest is not None:
                    losses[name] += F.cross_entropy(q.model(rest[0]), rest[1]).item()
            load(name, ints[name])
        best = min(losses.items(), key=lambda kv: kv[1])[0]
        new = flip_bit(ints[best], grads_v[best], grads_v[best].numel(), 1, targeted=True)
        flips += changed_bits(best, ints[best], new)
        ints[best] = new
        load(best, new)
    return flips


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "n-to-1", "target": 3},
        {"mode": "1-to-1", "source": 0, "target": 1},
        {"mode": "stealthy", "source": 0, "target": 1, "ref_type3_grad": True},
    ],
    ids=["n-to-1", "1-to-1", "stealthy"],
)
def test_t_bfa_flips_the_bits_the_reference_flips(
    kwargs: dict[str, object], digits_model: nn.Module, digits_data: Dataset
) -> None:
    victim = Victim(digits_model, input_shape=(1, 8, 8))
    x_all, y_all = digits_data.x_train, digits_data.y_train
    if kwargs["mode"] == "n-to-1":
        x_attack, y_attack = x_all[:100], y_all[:100]  # all drawn: the same batch in another order
    else:
        own = y_all == 0
        x_attack = torch.cat([x_all[own], x_all[~own][:60]])  # every source image and 60 others
        y_attack = torch.cat([y_all[own], y_all[~own][:60]])
    attack = TBFA(max_flips=6, target_success=1.0, **kwargs)  # type: ignore[arg-type]
    ours = attack.run(victim, digits_data.x_test[:100], digits_data.y_test[:100], x_attack=x_attack, y_attack=y_attack)
    target = torch.full((int((y_attack == 0).sum()),), 1)
    if kwargs["mode"] == "n-to-1":
        x, y, rest = x_attack, torch.full((100,), 3), None
    else:
        x, y = x_attack[y_attack == 0], target
        rest = (x_attack[y_attack != 0], y_attack[y_attack != 0]) if kwargs["mode"] == "stealthy" else None
    theirs = reference_tbfa(digits_model, x, y, rest, iterations=ours.n_flips)
    assert ours.n_flips == (3 if ours.stop == "stalled" else 6)  # stealthy: the success rate stays 0 here
    assert [(f.layer, f.index, f.bit) for f in ours.flips] == theirs
