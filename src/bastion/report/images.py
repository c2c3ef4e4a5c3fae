"""Images for reports as PNG bytes: a strip of images side by side (scaled up pixel for pixel when
small), and the evasion triptych clean | adversarial | amplified perturbation built on it."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image
from torch import Tensor

__all__ = ["strip", "triptych"]

_MIN_SIDE = 96  # small images (28x28 digits) are scaled up, pixel for pixel, to at least this side
_GAP = 4


def _to_uint8(img: Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W) or (H, W, 3) uint8."""
    arr = (img.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))


def strip(images: Sequence[Tensor]) -> bytes:
    """PNG of images (C, H, W) in [0, 1], all of one shape, side by side on white."""
    panels = [_to_uint8(t) for t in images]
    h, w = panels[0].shape[:2]
    zoom = max(1, -(-_MIN_SIDE // max(h, w)))
    mode = "L" if panels[0].ndim == 2 else "RGB"
    tiles = [Image.fromarray(p, mode=mode).resize((w * zoom, h * zoom), Image.Resampling.NEAREST) for p in panels]
    width = len(tiles) * w * zoom + (len(tiles) - 1) * _GAP
    canvas = Image.new(mode, (width, h * zoom), color=255 if mode == "L" else (255, 255, 255))
    for i, tile in enumerate(tiles):
        canvas.paste(tile, (i * (w * zoom + _GAP), 0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def triptych(x: Tensor, x_adv: Tensor) -> bytes:
    """PNG of the clean image, the adversarial one and the perturbation amplified to the full range
    (grey is 0, the largest change is black or white), side by side."""
    delta = (x_adv - x).float()
    scale = float(delta.abs().max())
    amplified = 0.5 + 0.5 * delta / scale if scale > 0 else delta + 0.5
    return strip([x, x_adv, amplified])
