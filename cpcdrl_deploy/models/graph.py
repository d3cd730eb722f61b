"""Layer analysis: prunable layers L_1..L_N, cut points 0..N, MACs (Eq. 3-4), S_i.

Everything here is measured by running the model once on a dummy input with
forward hooks, so it is exact for the (possibly pruned) module at hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.models.zoo import UnitModel, get_entry, load_model, resolve_checkpoint

FLOAT32_BYTES = 4


@dataclass(frozen=True)
class LayerInfo:
    """One prunable layer L_index (conv, depthwise/grouped conv or fc)."""

    index: int  # 1-based position L_index
    name: str  # qualified module name in the model
    kind: str  # "conv", "dwconv" (depthwise or grouped), "fc"
    in_channels: int
    out_channels: int
    kernel: int  # kernel side (1 for fc)
    stride: int
    groups: int
    in_shape: tuple[int, ...]  # per-sample input shape (C, H, W) or (C,)
    out_shape: tuple[int, ...]  # per-sample output shape of the layer itself
    macs: int  # Eq. 3 (conv, with C_in / groups) or Eq. 4 (fc)
    params: int
    unit: int  # index of the unit holding it


@dataclass(frozen=True)
class CutPoint:
    """Cut i: layers 1..i on the edge, i+1..N on the cloud."""

    index: int
    name: str  # the layer ending at this cut ("input" for cut 0)
    macs: int  # MACs of that layer (0 for cut 0)
    cum_macs: int  # MACs of layers 1..i (the edge's work)
    out_shape: tuple[int, ...]  # per-sample shape of the tensor crossing the cut
    out_bytes: int  # S_i: float32 bytes per sample crossing the cut
    cuttable: bool  # exactly one tensor crosses here
    unit_boundary: int  # number of units on the edge side when cut here (-1 if not cuttable)


@dataclass
class ModelAnalysis:
    model: str
    input_shape: tuple[int, ...]
    layers: list[LayerInfo]
    points: list[CutPoint]
    total_macs: int
    result_bytes: int  # bytes of the model's output (the result returned to the edge)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def cuttable_points(self) -> list[int]:
        return [p.index for p in self.points if p.cuttable]

    def unit_layers(self) -> dict[int, list[int]]:
        """Unit index -> the indices of the prunable layers inside it, in order (several in a residual block)."""
        out: dict[int, list[int]] = {}
        for layer in self.layers:
            out.setdefault(layer.unit, []).append(layer.index)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "total_macs": self.total_macs,
            "n_layers": self.n_layers,
            "result_bytes": self.result_bytes,
            "layers": [asdict(layer) for layer in self.layers],
            "points": [asdict(p) for p in self.points],
        }


def layer_macs(module: nn.Module, out_shape: tuple[int, ...]) -> int:
    """MACs of one conv/fc layer for one sample (Eq. 3-4)."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return kh * kw * (module.in_channels // module.groups) * module.out_channels * out_shape[-2] * out_shape[-1]
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    raise TypeError(type(module))


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def analyze(model: UnitModel, input_size: int, name: str = "", channels: int = 3) -> ModelAnalysis:
    """Run one dummy sample through ``model`` and list its layers and cut points."""
    names = {m: n for n, m in prunable_modules(model)}
    seen: list[tuple[nn.Module, tuple[int, ...], tuple[int, ...], int]] = []
    current_unit = [0]

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen.append((mod, tuple(inp[0].shape[1:]), tuple(out.shape[1:]), current_unit[0]))

    handles = [m.register_forward_hook(hook) for m in names]
    unit_out: list[tuple[int, ...]] = []
    try:
        x = torch.zeros(1, channels, input_size, input_size)
        with torch.no_grad():
            for u, unit in enumerate(model.units()):
                current_unit[0] = u
                x = unit(x)
                unit_out.append(tuple(x.shape[1:]))
    except RuntimeError as exc:  # a feature map shrunk to nothing, a classifier sized for another input
        first = (str(exc).splitlines() or [""])[0]
        raise CpcdrlError(f"{name or 'the model'} cannot take a {input_size}x{input_size} input: {first}") from None
    finally:
        for h in handles:
            h.remove()

    layers: list[LayerInfo] = []
    for i, (mod, in_shape, out_shape, u) in enumerate(seen, start=1):
        if isinstance(mod, nn.Conv2d):
            kind = "dwconv" if mod.groups > 1 else "conv"
            info = dict(
                in_channels=mod.in_channels,
                out_channels=mod.out_channels,
                kernel=mod.kernel_size[0],
                stride=mod.stride[0],
                groups=mod.groups,
            )
        else:
            kind = "fc"
            fc = cast(nn.Linear, mod)
            info = dict(in_channels=fc.in_features, out_channels=fc.out_features, kernel=1, stride=1, groups=1)
        layers.append(
            LayerInfo(
                index=i,
                name=names[mod],
                kind=kind,
                in_shape=in_shape,
                out_shape=out_shape,
                macs=layer_macs(mod, out_shape),
                params=sum(p.numel() for p in mod.parameters()),
                unit=u,
                **info,
            )
        )

    in_shape = (channels, input_size, input_size)
    points = [CutPoint(0, "input", 0, 0, in_shape, _nbytes(in_shape), True, 0)]
    cum = 0
    for layer in layers:
        cum += layer.macs
        is_last_in_unit = layer.index == len(layers) or layers[layer.index].unit != layer.unit
        shape = unit_out[layer.unit] if is_last_in_unit else layer.out_shape
        points.append(
            CutPoint(
                layer.index,
                layer.name,
                layer.macs,
                cum,
                shape,
                _nbytes(shape),
                is_last_in_unit,
                layer.unit + 1 if is_last_in_unit else -1,
            )
        )
    return ModelAnalysis(name, in_shape, layers, points, cum, _nbytes(unit_out[-1]))


def _nbytes(shape: tuple[int, ...]) -> int:
    n = FLOAT32_BYTES
    for d in shape:
        n *= d
    return n


def analyze_model(model: str, checkpoint: str | Path | None = None) -> ModelAnalysis:
    entry = get_entry(model)
    net = load_model(model, resolve_checkpoint(model, checkpoint, required=False) if checkpoint else None)
    return analyze(net, entry.input_size, model)
