"""An inference-only copy of a model, for scoring thousands of images on the CPU.

The search scores every plan it proposes on the validation images, and that
forward pass is half of ``optimize``'s time. Eager PyTorch repeats two
pieces of work on every call that a model which no longer changes does not
need:

- oneDNN reorders each convolution's weights into its blocked layout, and
  the activations into and out of it, at every call;
- batch norm after a convolution is a separate pass over the activations,
  although in eval mode it is an affine map that can live in the
  convolution's weights and bias.

:func:`scoring_copy` does both once per model: it folds every batch norm that
directly follows a convolution in an ``nn.Sequential``, packs every
convolution's weights for oneDNN, and keeps the activations in oneDNN's
layout through runs of units built only of operations that accept it
(convolution, ReLU, pooling). Everything else sees ordinary tensors. The
arithmetic is the same up to float rounding (folding reassociates the
batch norm): ``tests/test_fastcpu.py`` checks logits and predictions against
the eager model for the CIFAR zoo models and a pruned one. Speed-ups are measured by
``benchmarks/optimize_walltime.py --compare-scoring``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from cpcdrl_deploy.models.zoo import UnitModel

# modules that accept a oneDNN (mkldnn) tensor and return one
_LAYOUT_SAFE = (nn.Identity, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d)


class _PackedConv2d(nn.Conv2d):
    """A Conv2d whose weights oneDNN packed once; output in the layout of its input."""

    packed: torch.Tensor
    packed_bias: torch.Tensor | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = not x.is_mkldnn
        padding: Any = self.padding  # numeric: _packable refuses "same" / "valid"
        y = torch.mkldnn_convolution(
            x.to_mkldnn() if dense else x,
            self.packed,
            self.packed_bias,
            padding,
            self.stride,
            self.dilation,
            self.groups,
        )
        return y.to_dense() if dense else y


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of ``bn(conv(x))`` as one convolution (eval mode)."""
    running_var, running_mean = bn.running_var, bn.running_mean
    assert running_var is not None and running_mean is not None  # track_running_stats: checked by the caller
    scale = torch.rsqrt(running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach()
    shift = -running_mean * scale
    if bn.affine:
        shift = shift + bn.bias.detach()
    w = conv.weight.detach() * scale.reshape(-1, 1, 1, 1)
    b = shift if conv.bias is None else conv.bias.detach() * scale + shift
    return w.contiguous(), b.contiguous()


def _packable(m: nn.Module) -> bool:
    return type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str)


def _pack(module: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    conv: Any = module  # becomes a _PackedConv2d in place: new attributes, then its class
    conv.packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
        weight.to_mkldnn(), conv.padding, conv.stride, conv.dilation, conv.groups
    )
    conv.packed_bias = bias.to_mkldnn() if bias is not None else None
    conv.__class__ = _PackedConv2d


def available(model: nn.Module) -> bool:
    """oneDNN is built in and the model is on the CPU in float32."""
    p = next(model.parameters(), None)
    return (
        torch.backends.mkldnn.is_available() and p is not None and p.device.type == "cpu" and p.dtype == torch.float32
    )


def scoring_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for eval-mode inference only (see the module docstring); ``model`` itself when nothing
    would change."""
    if not available(model) or not any(_fast_sequential(m) for m in model.modules()):
        return model
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        seqs: list[Any] = [m for m in net.modules() if _fast_sequential(m)]  # nn.Sequentials, indexed and assigned into
        for seq in seqs:
            for i, conv in enumerate(seq):
                if not _packable(conv):
                    continue
                bn = seq[i + 1] if i + 1 < len(seq) else None
                if type(bn) is nn.BatchNorm2d and bn.track_running_stats and bn.num_features == conv.out_channels:
                    _pack(conv, *_fold_bn(conv, bn))
                    seq[i + 1] = nn.Identity()
                else:
                    _pack(
                        conv, conv.weight.detach().contiguous(), conv.bias.detach() if conv.bias is not None else None
                    )
    return _LayoutRunner(net) if isinstance(net, UnitModel) else net


def _fast_sequential(m: nn.Module) -> bool:
    """A Sequential of convolutions, batch norms and layout-safe ops: its convolutions are packed.

    Only there: a packed convolution between ops that need ordinary tensors
    pays two layout conversions per call, which made CIFAR MobileNet's
    scoring slower than eager when it was tried.
    """
    kids = list(m.children()) if isinstance(m, nn.Sequential) else []
    return any(_packable(k) for k in kids) and all(
        _packable(k) or type(k) is nn.BatchNorm2d or isinstance(k, _LAYOUT_SAFE) for k in kids
    )


def _layout_safe(unit: nn.Module) -> bool:
    fn = getattr(unit, "_fn", None)
    return isinstance(fn, nn.Sequential) and all(isinstance(m, (_PackedConv2d, *_LAYOUT_SAFE)) for m in fn)


class _LayoutRunner(UnitModel):
    """Runs a UnitModel's units, keeping oneDNN's layout between units that all accept it."""

    def __init__(self, net: UnitModel) -> None:
        super().__init__()
        self.net = net
        # the copy never changes: decide each unit's layout once, not at every batch
        self._steps = [(unit, _layout_safe(unit)) for unit in net.units()]

    def units(self) -> list:
        return self.net.units()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit, safe in self._steps:
            if safe:
                x = x if x.is_mkldnn else x.to_mkldnn()
            elif x.is_mkldnn:
                x = x.to_dense()
            x = unit(x)
        return x.to_dense() if x.is_mkldnn else x
