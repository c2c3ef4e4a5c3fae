"""Differential test: `bfa` picks the same bits as the reference's progressive bit search
(`elliothe/Neural_Network_Weight_Attack`, `attack/BFA.py` and `attack/data_conversion.py`),
re-expressed here in the reference's own formulation: int2bin / bin2int, the bit-weight column
`b_w = [-128, 64, ..., 1]`, the xor gradient mask, `topk` over the (8, k) bit-gradient matrix and the
`while loss_max <= loss` loop. The reference itself is not installed (it needs torchvision and CUDA)."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.weights import BFA, quantize_int8
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


def flip_bit(w: Tensor, grad: Tensor, k_top: int, n_bits2flip: int) -> Tensor:
    """The reference's `flip_bit` on integer-valued weights `w` and their gradient."""
    _, w_idx_topk = grad.abs().view(-1).topk(k_top)
    b_grad_topk = grad.view(-1)[w_idx_topk] * B_W  # (8, k)
    b_grad_topk_sign = (b_grad_topk.sign() + 1) * 0.5
    w_bin = int2bin(w.view(-1)).short()
    w_bin_topk = w_bin[w_idx_topk]
    b_abs = B_W.abs().repeat(1, k_top).short()
    b_bin_topk = (w_bin_topk.repeat(N_BITS, 1) & b_abs) // b_abs
    grad_mask = b_bin_topk ^ b_grad_topk_sign.short()
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
        diff = (int2bin(ints[best].view(-1)).short() ^ int2bin(new.view(-1)).short()).to(torch.int64)
        for index in diff.nonzero().flatten().tolist():
            flips += [(best, index, b) for b in range(N_BITS) if (int(diff[index]) >> b) & 1]
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
