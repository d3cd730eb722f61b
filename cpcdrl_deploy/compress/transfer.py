"""The cut tensor on the wire: its size per encoding, and the encoding's effect on accuracy.

One place for what ``export --transfer`` builds into the ONNX graphs and what
the optimiser prices and scores, so the two cannot disagree:

- ``fp32``: the tensor as computed (the paper's S_i);
- ``fp16``: cast, half the bytes;
- ``int8``: ONNX ``DynamicQuantizeLinear`` per request (one uint8 scale/zero
  point for the whole tensor), a quarter of the bytes plus 5 (scale float32,
  zero point uint8). At cut 0 the tensor is the preprocessed image itself.

The search scores a plan with its wire simulated (``WireModel``), since a
lossy wire can move accuracy, and prices its bytes (``wire_bytes``).
"""

from __future__ import annotations

import torch
from torch import nn

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.models.zoo import Unit, UnitModel

TRANSFERS = ("fp32", "fp16", "int8")
INT8_SIDE_BYTES = 5  # the per-request scale (float32) and zero point (uint8) sent beside the tensor


def check_transfer(transfer: str) -> None:
    if transfer not in TRANSFERS:
        raise CpcdrlError(f"--transfer must be one of {', '.join(TRANSFERS)} (got {transfer!r})")


def wire_bytes(fp32_bytes: int, transfer: str) -> int:
    """Bytes per request of a tensor that is ``fp32_bytes`` in float32, sent as ``transfer``."""
    check_transfer(transfer)
    if transfer == "fp16":
        return fp32_bytes // 2
    if transfer == "int8":
        return fp32_bytes // 4 + INT8_SIDE_BYTES
    return fp32_bytes


def through_wire(x: torch.Tensor, transfer: str) -> torch.Tensor:
    """``x`` (a batch) as the receiver gets it back: each sample encoded and decoded on its own, as one request.

    int8 follows ONNX DynamicQuantizeLinear: the range always includes 0,
    scale = (max - min) / 255, zero point = round(-min / scale) clipped to
    [0, 255], values rounded half to even and saturated.
    """
    if transfer == "fp32":
        return x
    if transfer == "fp16":
        return x.half().float()
    check_transfer(transfer)
    flat = x.reshape(len(x), -1)
    lo = flat.min(1, keepdim=True).values.clamp(max=0.0)
    hi = flat.max(1, keepdim=True).values.clamp(min=0.0)
    scale = (hi - lo) / 255.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    zp = torch.round(-lo / safe).clamp(0, 255)
    q = torch.clamp(torch.round(flat / safe) + zp, 0, 255)
    return ((q - zp) * scale).reshape(x.shape)


class WireModel(nn.Module):
    """``net`` with the cut tensor after its first ``boundary`` units passed through the wire (``through_wire``)."""

    def __init__(self, net: UnitModel, boundary: int, transfer: str) -> None:
        super().__init__()
        self.net, self.boundary, self.transfer = net, boundary, transfer
        self._units: list[Unit] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # made once per wrapper: a graph model's units come from tracing it, too slow for every batch
        if self._units is None:
            self._units = self.net.units()
        units = self._units
        for u in units[: self.boundary]:
            x = u(x)
        x = through_wire(x, self.transfer)
        for u in units[self.boundary :]:
            x = u(x)
        return x


def lossy_at(cut: int, n_layers: int, transfer: str) -> bool:
    """Whether a plan cut at ``cut`` sends anything through a lossy wire (nothing is sent at cut N)."""
    return transfer != "fp32" and cut < n_layers
