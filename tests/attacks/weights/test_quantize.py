"""8-bit quantization as the bit-flip papers use it: codes round-trip, a flip moves one bit of one
weight by exactly its two's-complement value, the error is at most half a step, and the model given
is never touched."""

import pytest
import torch
from torch import nn

from bastion.attacks.weights.quantize import BIT_VALUES, bits_of, flip_codes, popcount, quantize_int8
from bastion.core import ConfigError, ModelError, Victim
from bastion.data import Dataset

ALL_CODES = torch.arange(-128, 128).to(torch.int8)  # every value an int8 can hold


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_bits_round_trip_every_code() -> None:
    bits = bits_of(ALL_CODES)  # (256, 8)
    assert ((bits == 0) | (bits == 1)).all()
    assert torch.equal((bits.float() * BIT_VALUES).sum(1).to(torch.int64), ALL_CODES.to(torch.int64))
    assert bits_of(torch.tensor([5], dtype=torch.int8)).tolist() == [[1, 0, 1, 0, 0, 0, 0, 0]]
    assert bits_of(torch.tensor([-1], dtype=torch.int8)).tolist() == [[1] * 8]


@pytest.mark.parametrize("bit", range(8))
def test_a_flip_moves_the_code_by_its_twos_complement_value(bit: int) -> None:
    flipped = flip_codes(ALL_CODES, bit)
    delta = flipped.to(torch.int64) - ALL_CODES.to(torch.int64)
    was_set = bits_of(ALL_CODES)[:, bit] == 1
    value = -128 if bit == 7 else 2**bit
    assert torch.equal(delta, torch.where(was_set, -value, value))  # MSB: 0 -> 1 is -128, 1 -> 0 is +128
    assert popcount(flipped ^ ALL_CODES) == 256  # exactly one bit per code
    assert torch.equal(flip_codes(flipped, bit), ALL_CODES)  # flipping twice restores
    if bit == 7:
        assert int(flip_codes(torch.tensor([5], dtype=torch.int8), 7)) == -123


def test_quantization_follows_the_papers_rule_within_half_a_step() -> None:
    net = _net()
    q = quantize_int8(net)
    assert list(q.layers) == ["0", "3"]  # conv and linear weights; biases stay float
    for name, layer in q.layers.items():
        w = dict(net.named_modules())[name].weight.detach()
        scale = w.abs().max() / 127
        assert torch.equal(layer.scale, scale)
        assert int(layer.codes.abs().max()) == 127 and layer.codes.dtype == torch.int8
        assert (q.dequantized(name) - w).abs().max() <= scale / 2 + 1e-7
        assert torch.equal(layer.weight.detach(), q.dequantized(name))  # the copy computes with codes * scale
        assert torch.equal(dict(q.model.named_modules())[name].bias, dict(net.named_modules())[name].bias)
    assert q.n_weights == 4 * 9 + 3 * 144 and q.hamming() == 0


def test_a_flip_changes_one_bit_of_one_weight_by_exactly_its_value() -> None:
    q = quantize_int8(_net())
    for layer, index, bit in [("0", 5, 0), ("0", 5, 7), ("3", 100, 3), ("3", 431, 7), ("3", 7, 6)]:
        before_codes = q.layers[layer].codes.clone()
        before_w = q.layers[layer].weight.detach().clone()
        flip = q.flip(layer, index, bit)
        codes = q.layers[layer].codes
        assert popcount(codes ^ before_codes) == 1 and int((codes != before_codes).sum()) == 1
        assert codes.view(-1)[index] == flip.after and before_codes.view(-1)[index] == flip.before
        was_set = (flip.before >> bit) & 1
        value = -128 if bit == 7 else 2**bit
        assert flip.after - flip.before == (-value if was_set else value)
        dw = q.layers[layer].weight.detach() - before_w
        assert int((dw != 0).sum()) == 1
        assert torch.allclose(dw.view(-1)[index], (flip.after - flip.before) * q.layers[layer].scale)
        assert torch.equal(q.layers[layer].weight.detach(), q.dequantized(layer))
    assert q.hamming() == 5
    q.flip("3", 100, 3)  # the same bit again: back to the original
    assert q.hamming() == 4


def test_a_trial_flip_is_undone_and_two_bits_of_one_weight_both_flip() -> None:
    q = quantize_int8(_net())
    w = q.layers["3"].weight.detach().clone()
    code = int(q.layers["3"].codes.view(-1)[9])
    with q.trial("3", torch.tensor([9, 9, 2]), torch.tensor([1, 7, 0])):
        expect = flip_codes(flip_codes(torch.tensor([code], dtype=torch.int8), 1), 7)
        assert torch.allclose(q.layers["3"].weight.view(-1)[9], expect.float() * q.layers["3"].scale)
    assert torch.equal(q.layers["3"].weight.detach(), w) and q.hamming() == 0


def test_the_users_model_is_never_touched() -> None:
    net = _net().train()
    for p in net[3].parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    q = quantize_int8(net)
    q.flip("0", 0, 7)
    with q.trial("3", torch.tensor([0]), torch.tensor([7])):
        pass
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.training and [p.requires_grad for p in net.parameters()] == [True, True, False, False]
    assert q.model is not net and not q.model.training


def test_models_without_weights_to_quantize_are_refused() -> None:
    with pytest.raises(ModelError, match="no convolution or linear"):
        quantize_int8(nn.Sequential(nn.Flatten()))
    zero = nn.Linear(3, 2)
    nn.init.zeros_(zero.weight)
    with pytest.raises(ModelError, match="non-zero"):
        quantize_int8(zero)
    with pytest.raises(ModelError, match=r"nn\.Module"):
        quantize_int8("model")  # type: ignore[arg-type]


def test_the_quantized_model_keeps_its_accuracy(mnist_model: nn.Module, mnist_data: Dataset) -> None:
    x, y = mnist_data.x_test, mnist_data.y_test  # all 1,000 test images
    float_acc = (Victim(mnist_model).predict(x) == y).double().mean()
    quant_acc = (Victim(quantize_int8(mnist_model).model).predict(x) == y).double().mean()
    assert abs(float(float_acc - quant_acc)) <= 0.005  # the papers' 8-bit models lose under half a point


def test_the_t_bfa_scheme_leaves_headroom() -> None:
    net = _net()
    q = quantize_int8(net, scheme="tbfa")
    for name, layer in q.layers.items():
        w = dict(net.named_modules())[name].weight.detach()
        assert torch.equal(layer.scale, 2 * w.abs().max() / 127)
        assert int(layer.codes.abs().max()) == 64  # round(127 / 2): the codes keep half the range free
        assert (q.dequantized(name) - w).abs().max() <= layer.scale / 2 + 1e-7
    with pytest.raises(ConfigError, match="scheme must be 'bfa' or 'tbfa'"):
        quantize_int8(net, scheme="int4")  # type: ignore[arg-type]
