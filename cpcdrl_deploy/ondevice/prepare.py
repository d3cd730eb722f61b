"""Camera frames -> the model's input, on the device, with numpy alone.

The same steps, in the same arithmetic, as ``models/data.Preprocess`` does
with torch on the host (the export manifest and the plan record them): the
shorter side resized to ``resize`` (default ``size``) by bilinear
interpolation as ``torch.nn.functional.interpolate(mode="bilinear",
align_corners=False)`` computes it (no antialiasing), a centred ``size`` x
``size`` crop, scaling to [0, 1], then the mean and standard deviation.
A device then sends or runs on what PyTorch evaluated, to float rounding.
"""

from __future__ import annotations

import numpy as np


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights along one axis: torch's ``area_pixel_compute_source_index`` for bilinear."""
    # in float32, as torch computes it for float32 tensors: float64 here would differ from the host by 1e-5
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, w1


def _resize(x: np.ndarray, h_out: int, w_out: int) -> np.ndarray:
    """Bilinear resize of float32 N x C x H x W to ``h_out`` x ``w_out``."""
    h, w = x.shape[-2:]
    y0, y1, wy = _axis_weights(h, h_out)
    x0, x1, wx = _axis_weights(w, w_out)
    rows = x[:, :, y0, :] * (np.float32(1) - wy)[:, None] + x[:, :, y1, :] * wy[:, None]
    return rows[:, :, :, x0] * (np.float32(1) - wx) + rows[:, :, :, x1] * wx


def _fit(x: np.ndarray, size: int, resize: int | None) -> np.ndarray:
    h, w = x.shape[-2:]
    if (h, w) == (size, size) and resize in (None, size):
        return x
    short = resize or size
    # Python's round on the same floats as the host's Preprocess._fit, so both pick the same intermediate size
    x = _resize(x, max(short, round(h * short / min(h, w))), max(short, round(w * short / min(h, w))))
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


def prepare(images: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 N x H x W x 3 frames -> float32 N x 3 x size x size, as ``spec`` (the manifest's ``preprocess``) says."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 N x H x W x 3, not {images.dtype} {list(images.shape)}")
    size, resize = int(spec["size"]), spec.get("resize")
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    x = _fit(x, size, int(resize) if resize else None)
    mean = np.asarray(spec["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec["std"], dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)
