"""The generic tensor helpers of `bastion.core.ops`."""

import math

import torch

from bastion.core.ops import dct_matrix
from bastion.core.random import make_generator


def test_dct_matrix_is_the_orthonormal_dct() -> None:
    for n in (1, 5, 8):
        d = dct_matrix(n)
        assert torch.allclose(d @ d.T, torch.eye(n), atol=1e-6)
        x = torch.rand(n, generator=make_generator(0))
        i = torch.arange(n, dtype=torch.float32)
        direct = torch.stack([(x * torch.cos(math.pi * (2 * i + 1) * k / (2 * n))).sum() for k in range(n)])
        scale = torch.full((n,), math.sqrt(2 / n))
        scale[0] = math.sqrt(1 / n)
        assert torch.allclose(d @ x, direct * scale, atol=1e-5)
    assert dct_matrix(4) is dct_matrix(4, torch.device("cpu"))  # built once per size and device
