"""Channel pruning of the edge half (Eq. 1) with least-squares reconstruction (Eq. 2).

Three separate pieces, after Torch-Pruning's split of graph / importance / pruner:

- *graph*: :func:`channel_groups` asks Torch-Pruning's dependency graph which
  layers' channels are coupled (batch norm, depthwise convs, consumers' input
  channels, residual adds). A group is led by its first producing layer; the
  keep ratio r_t of a layer that leads no group is ignored (its channels follow
  its group's leader: a depthwise conv follows the layer before it).
- *importance*: a function ranking a leader's output channels (L1 norm of its
  filters by default, as in AMC / Li et al.).
- *pruner*: :func:`prune` removes the channels physically (a smaller module,
  never masks), then refits every dense consumer of pruned channels by
  least squares on feature maps of calibration images (Eq. 2), so its output
  stays close to the original layer's. Consumers on the cloud side (the first
  cloud layer when t = p) are refitted too; every other cloud weight is kept.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from cpcdrl_deploy.compress.transfer import wire_bytes
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.models.graph import ModelAnalysis
from cpcdrl_deploy.models.zoo import UnitModel, device_of

Importance = Callable[[nn.Module], torch.Tensor]


def l1_importance(module: nn.Module) -> torch.Tensor:
    """Sum of |w| of each output filter."""
    w = cast(torch.Tensor, module.weight).detach()
    return w.abs().reshape(w.shape[0], -1).sum(1)


def l2_importance(module: nn.Module) -> torch.Tensor:
    w = cast(torch.Tensor, module.weight).detach()
    return w.pow(2).reshape(w.shape[0], -1).sum(1).sqrt()


IMPORTANCE: dict[str, Importance] = {"l1": l1_importance, "l2": l2_importance}


@dataclass
class PruneConfig:
    importance: str = "l1"  # key of IMPORTANCE
    # Kept channel counts are multiples of this. 8, not 1: ONNX Runtime's CPU
    # convolutions use an 8-channel blocked layout (NCHWc) and fall back to a
    # slower path for other counts. CIFAR MobileNet, every layer at keep 0.8
    # (benchmarks/channel_alignment.py): 2.61 ms with free counts, 1.07 ms
    # rounded to 8, 1.03 ms unpruned here; 11.4 / 3.6 / 6.2 ms on the emulated Pi.
    round_to: int = 8
    refit: bool = True  # least-squares reconstruction of consumers (Eq. 2)
    points_per_image: int = 10  # feature-map positions sampled per calibration image (AMC uses 10)
    ridge: float = 1e-4  # pull toward the original kept weights, relative to the mean diagonal of X^T X


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels that must be pruned together."""

    leader: int  # index (1-based) of the first layer producing these channels
    producers: tuple[int, ...]  # layers whose *outputs* lose channels (incl. depthwise pass-throughs)
    dense_producers: tuple[int, ...]  # producers that are not depthwise (cannot be pruned on the cloud side)
    consumers: tuple[int, ...]  # dense layers whose *inputs* lose channels: refitted by Eq. 2
    channels: int

    def prunable_at(self, cut: int) -> bool:
        """Pruned channels may only change dense layers' outputs on the edge side."""
        return all(j <= cut for j in self.dense_producers)


def _layer_modules(model: nn.Module, analysis: ModelAnalysis) -> list[nn.Module]:
    mods = dict(model.named_modules())
    return [mods[layer.name] for layer in analysis.layers]


def channel_groups(model: UnitModel, analysis: ModelAnalysis) -> list[ChannelGroup]:
    """The coupled channel groups of ``model``, one per leading layer (classifier excluded)."""
    example = torch.zeros(1, *analysis.input_shape, device=device_of(model))
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    index_of = {id(m): i for i, m in enumerate(_layer_modules(model, analysis), start=1)}
    groups: list[ChannelGroup] = []
    covered: set[int] = set()
    for layer in analysis.layers[:-1]:  # the final classifier never loses outputs
        if layer.index in covered:
            continue
        mod = _layer_modules(model, analysis)[layer.index - 1]
        fn = tp.prune_linear_out_channels if isinstance(mod, nn.Linear) else tp.prune_conv_out_channels
        group = dg.get_pruning_group(mod, fn, idxs=[0])
        producers, dense, consumers = set(), set(), set()
        for item in group.items:
            j = index_of.get(id(item.dep.target.module))
            if j is None:
                continue
            handler = getattr(item.dep.handler, "__name__", str(item.dep.handler))
            is_dw = analysis.layers[j - 1].kind == "dwconv"
            if "out_channels" in handler:
                producers.add(j)
                if not is_dw:
                    dense.add(j)
            elif "in_channels" in handler and not is_dw:
                consumers.add(j)
        covered |= producers
        if analysis.n_layers in producers:  # coupled to the classifier's outputs: never pruned
            continue
        groups.append(
            ChannelGroup(
                min(producers),
                tuple(sorted(producers)),
                tuple(sorted(dense)),
                tuple(sorted(consumers)),
                layer.out_channels,
            )
        )
    return groups


def model_structure(model: str, checkpoint: str | Path | None = None) -> tuple[ModelAnalysis, list[ChannelGroup]]:
    """What ``cpcdrl analyze`` shows: the layers and cut points, and the channel groups pruned together."""
    from cpcdrl_deploy.models.graph import analyze
    from cpcdrl_deploy.models.zoo import get_entry, load_model, resolve_checkpoint

    ckpt = resolve_checkpoint(model, checkpoint, required=False) if checkpoint else None
    net = load_model(model, ckpt)
    a = analyze(net, get_entry(model).input_size, model)
    return a, channel_groups(net, a)


def kept_channels(ratio: float, channels: int, round_to: int = 1) -> int:
    """round(ratio x channels) to a multiple of ``round_to``, at least 1, at most ``channels``."""
    if not 0.0 < ratio <= 1.0:
        raise CpcdrlError(f"keep ratio {ratio} outside (0, 1]")
    if ratio == 1.0:
        return channels  # "keep everything" must not be rounded away
    n = int(round(ratio * channels / round_to)) * round_to
    return int(min(channels, max(1, n, min(round_to, channels))))


@dataclass
class Calibration:
    """Calibration images (training split) and the original model's sampled outputs, cached.

    The original model's feature maps do not depend on the plan, so they are
    computed once and reused by every ``prune`` call of a search.
    """

    images: torch.Tensor
    points_per_image: int = 10
    seed: int = 0
    _targets: dict[str, torch.Tensor] = field(default_factory=dict)
    _positions: dict[str, torch.Tensor] = field(default_factory=dict)

    def prepare(self, original: nn.Module, names: Sequence[str]) -> None:
        missing = [n for n in names if n not in self._targets]
        if not missing:
            return
        mods = dict(original.named_modules())
        outs: dict[str, torch.Tensor] = {}
        handles = [mods[n].register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o.detach())) for n in missing]
        try:
            with torch.no_grad():
                original(self.images.to(device_of(original)))
        finally:
            for h in handles:
                h.remove()
        gen = torch.Generator().manual_seed(self.seed)
        for n in missing:
            y = outs[n]
            if y.dim() == 4:
                nb, c, h, w = y.shape
                m = min(self.points_per_image, h * w)
                pos = torch.stack([torch.randperm(h * w, generator=gen)[:m] for _ in range(nb)]).to(
                    y.device
                )  # N x m, drawn on the CPU: same points anywhere
                self._positions[n] = pos
                flat = y.reshape(nb, c, h * w)
                self._targets[n] = (
                    torch.gather(flat, 2, pos.unsqueeze(1).expand(nb, c, m)).permute(0, 2, 1).reshape(-1, c)
                )
            else:
                self._targets[n] = y.reshape(y.shape[0], -1)

    def target(self, name: str) -> torch.Tensor:
        return self._targets[name]

    def positions(self, name: str) -> torch.Tensor | None:
        return self._positions.get(name)


@dataclass
class PruneResult:
    model: UnitModel
    cut: int
    ratios: list[float]  # effective keep ratios of layers 1..cut (1.0 where not pruned)
    out_channels: list[int]  # output channels of every layer 1..N after pruning
    refitted: list[str]  # names of the layers refitted by least squares
    reconstruction_error: dict[str, tuple[float, float]]  # name -> (relative error before, after refit)


def prune(
    model: UnitModel,
    analysis: ModelAnalysis,
    cut: int,
    ratios: Sequence[float],
    calibration: Calibration | None = None,
    config: PruneConfig | None = None,
    groups: list[ChannelGroup] | None = None,
) -> PruneResult:
    """A pruned copy of ``model``: layers 1..cut keep ``ratios`` of their output channels.

    ``ratios[t-1]`` applies to L_t when L_t leads a channel group that can be pruned
    at this cut; other entries are ignored (see the module docstring). The input
    model is not modified.
    """
    cfg = config or PruneConfig()
    if not 0 <= cut <= analysis.n_layers:
        raise CpcdrlError(f"cut {cut} outside 0..{analysis.n_layers}")
    if not analysis.points[cut].cuttable:
        raise CpcdrlError(
            f"cut {cut} ({analysis.points[cut].name}) does not carry a single tensor; cuttable:"
            f" {analysis.cuttable_points()}"
        )
    if len(ratios) != cut:
        raise CpcdrlError(f"{len(ratios)} keep ratios given for cut {cut}: need exactly one per edge layer")
    if cfg.importance not in IMPORTANCE:
        raise CpcdrlError(f"unknown importance {cfg.importance!r}; known: {', '.join(IMPORTANCE)}")
    if cfg.refit and calibration is None:
        raise CpcdrlError("the least-squares refit needs calibration images")
    groups = groups if groups is not None else channel_groups(model, analysis)
    pruned = copy.deepcopy(model)
    pruned.eval()
    mods = _layer_modules(pruned, analysis)
    score = IMPORTANCE[cfg.importance]

    # Decide every group's kept channels first (importance on the original weights).
    plans: list[tuple[ChannelGroup, list[int]]] = []
    for g in groups:
        if g.leader > cut or not g.prunable_at(cut):
            continue
        keep = kept_channels(float(ratios[g.leader - 1]), g.channels, cfg.round_to)
        if keep == g.channels:
            continue
        order = torch.argsort(score(mods[g.leader - 1]), descending=True)
        drop = sorted(order[keep:].tolist())
        plans.append((g, drop))

    kept_idx: dict[int, list[int]] = {}  # layer index -> kept output channel indices (original numbering)
    if plans:
        dg = tp.DependencyGraph().build_dependency(
            pruned, example_inputs=torch.zeros(1, *analysis.input_shape, device=device_of(pruned))
        )
        for g, drop in plans:
            leader = mods[g.leader - 1]
            fn = tp.prune_linear_out_channels if isinstance(leader, nn.Linear) else tp.prune_conv_out_channels
            group = dg.get_pruning_group(leader, fn, idxs=drop)
            if not dg.check_pruning_group(group):
                raise CpcdrlError(
                    f"pruning {analysis.layers[g.leader - 1].name} to {g.channels - len(drop)} channels is invalid"
                )
            group.prune()
            for j in g.producers:
                kept_idx[j] = [c for c in range(g.channels) if c not in set(drop)]

    effective = [1.0] * cut
    for g, drop in plans:
        effective[g.leader - 1] = (g.channels - len(drop)) / g.channels
    out_channels = [int(m.out_features if isinstance(m, nn.Linear) else cast(nn.Conv2d, m).out_channels) for m in mods]

    refitted: list[str] = []
    errors: dict[str, tuple[float, float]] = {}
    consumers = sorted({c for g, _ in plans for c in g.consumers})
    if consumers and cfg.refit:
        assert calibration is not None
        errors = _refit(model, pruned, analysis, consumers, kept_idx, calibration, cfg)
        refitted = [analysis.layers[c - 1].name for c in consumers]
    return PruneResult(pruned, cut, effective, out_channels, refitted, errors)


class _Captured(Exception):
    """Stops a forward pass once a hook has the input it wanted."""


def _refit(
    original: UnitModel,
    pruned: UnitModel,
    analysis: ModelAnalysis,
    consumers: list[int],
    kept_idx: dict[int, list[int]],
    calib: Calibration,
    cfg: PruneConfig,
) -> dict[str, tuple[float, float]]:
    """Refit consumer layers one after another, each on the pruned network's actual inputs.

    Going unit by unit, the pruned network's activations at a consumer already
    include every earlier refit, so errors do not compound (He et al., 2017).
    """
    names = [analysis.layers[c - 1].name for c in consumers]
    calib.prepare(original, names)
    pmods = dict(pruned.named_modules())
    by_unit: dict[int, list[int]] = {}
    for c in consumers:
        by_unit.setdefault(analysis.layers[c - 1].unit, []).append(c)
    errors: dict[str, tuple[float, float]] = {}
    x = calib.images.to(device_of(pruned))
    with torch.no_grad():
        for u, unit in enumerate(pruned.units()):
            for c in by_unit.get(u, []):
                name = analysis.layers[c - 1].name
                mod = pmods[name]
                captured: list[torch.Tensor] = []

                def grab(m, i, captured=captured):
                    captured.append(i[0].detach())
                    # the layer's input is all we need: do not run it (and what follows) with the old weights
                    raise _Captured

                h = mod.register_forward_pre_hook(grab)
                try:
                    unit(x)
                except _Captured:
                    pass
                finally:
                    h.remove()
                errors[name] = _solve_layer(
                    mod, captured[0], calib.target(name), calib.positions(name), kept_idx.get(c), cfg.ridge
                )
            if u < max(by_unit):
                x = unit(x)
            else:
                break
    return errors


def _solve_layer(
    mod: nn.Conv2d | nn.Linear,
    x_in: torch.Tensor,
    y_full: torch.Tensor,
    pos: torch.Tensor | None,
    kept_out: list[int] | None,
    ridge: float,
) -> tuple[float, float]:
    """Least squares W' = argmin ||Y - X' W'^T||^2 (+ ridge toward the kept original weights).

    Returns the relative reconstruction error ||Y - X'W^T|| / ||Y|| before and after.
    """
    y = y_full if kept_out is None else y_full[:, kept_out]
    if isinstance(mod, nn.Conv2d):
        assert pos is not None
        xs = patches_at(x_in, mod, pos)
    else:
        xs = x_in.reshape(x_in.shape[0], -1)
    w0 = mod.weight.detach().reshape(mod.weight.shape[0], -1)
    bias = mod.bias
    X = xs.float()
    if bias is not None:
        X = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device)], 1)
        w0 = torch.cat([w0, bias.detach().unsqueeze(1)], 1)
    Y = y.float()
    W, before, after = ridge_toward(X, Y, w0, ridge)
    if after > before:  # never make a layer worse than plain pruning
        return before, before
    if bias is not None:
        bias.data.copy_(W[:, -1])
        W = W[:, :-1]
    mod.weight.data.copy_(W.reshape(mod.weight.shape))
    return before, after


def patches_at(x: torch.Tensor, conv: nn.Conv2d, pos: torch.Tensor) -> torch.Tensor:
    """The conv's input patches at the sampled output positions: (N*m) x (C*kh*kw), rows as F.unfold orders them.

    ``pos``: N x m flat output positions. Only the sampled windows are read:
    F.unfold would build every window (N x C*k*k x H*W, 600 MB for VGG16's
    second layer on 256 images) to keep 10 per image.
    """
    padding = cast(tuple[int, int], conv.padding)  # never "same"/"valid" here: the zoo builds numeric padding
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, padding, conv.dilation
    nb, c, h, w = x.shape
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    oy, ox = pos // w_out, pos % w_out  # N x m
    iy = (oy * sh)[:, :, None, None] + (torch.arange(kh, device=x.device) * dh)[:, None]  # N x m x kh x 1
    ix = (ox * sw)[:, :, None, None] + (torch.arange(kw, device=x.device) * dw)[None, :]  # N x m x 1 x kw
    xp = F.pad(x, (pw, pw, ph, ph))
    n_idx = torch.arange(nb, device=x.device)[:, None, None, None]
    win = xp.permute(0, 2, 3, 1)[n_idx, iy, ix]  # N x m x kh x kw x C
    return win.permute(0, 1, 4, 2, 3).reshape(nb * pos.shape[1], c * kh * kw)


def ridge_toward(X: torch.Tensor, Y: torch.Tensor, w0: torch.Tensor, ridge: float) -> tuple[torch.Tensor, float, float]:
    """argmin_W ||Y - X W^T||^2 + lam ||W - w0||^2, lam = ``ridge`` x the mean of diag(X^T X); W is C_out x D.

    Returns W and the relative errors ||Y - X W^T|| / ||Y|| at w0 and at W.
    Solved in whichever form is smaller. Primal: (X^T X + lam I) W^T = X^T Y
    + lam w0^T, D x D. Dual (push-through identity): W^T = w0^T + X^T alpha,
    (X X^T + lam I) alpha = R, R = Y - X w0^T, n x n; its errors come from R
    and X X^T alpha without another pass over X. VGG16's 512-channel 3x3
    layers have D = 4,609 columns and n = 2,560 calibration points: the dual
    is several times cheaper there. Products in float32 (the bulk of the
    work), the solve in float64 by Cholesky (the ridge makes the system
    positive definite).
    """
    n, d = X.shape
    lam = ridge * (X.square().sum() / d).clamp_min(1e-12).double()  # mean of diag(X^T X) without forming it
    y_norm = float(torch.linalg.norm(Y).clamp_min(1e-12))
    if d <= n:
        gram = (X.T @ X).double()
        gram.diagonal().add_(lam)
        rhs = (X.T @ Y).double() + lam * w0.T.double()
        chol, info = torch.linalg.cholesky_ex(gram)
        W = (torch.cholesky_solve(rhs, chol) if int(info) == 0 else torch.linalg.solve(gram, rhs)).T.float()
        return W, _rel_err(X, Y, w0), _rel_err(X, Y, W)
    kernel = X @ X.T
    resid = Y - X @ w0.T
    gram = kernel.double()
    gram.diagonal().add_(lam)
    chol, info = torch.linalg.cholesky_ex(gram)
    alpha = (
        torch.cholesky_solve(resid.double(), chol) if int(info) == 0 else torch.linalg.solve(gram, resid.double())
    ).float()  # n x C_out
    W = (w0.T + X.T @ alpha).T
    return W, float(torch.linalg.norm(resid)) / y_norm, float(torch.linalg.norm(resid - kernel @ alpha)) / y_norm


def _rel_err(X: torch.Tensor, Y: torch.Tensor, W: torch.Tensor) -> float:
    return float((Y - X @ W.T).norm() / Y.norm().clamp_min(1e-12))


@dataclass(frozen=True)
class PlanShape:
    """Channel counts, MACs and cut size of a (cut, ratios) plan, computed without pruning.

    The latency models need only this, so a search can price a plan in
    microseconds; ``tests/test_pruning.py`` checks it against real pruned modules.
    """

    cut: int
    in_keep: tuple[float, ...]  # kept fraction of each layer's input channels (1..N)
    out_keep: tuple[float, ...]  # kept fraction of each layer's output channels
    layer_macs: tuple[int, ...]  # MACs of each layer after pruning
    cut_bytes: int  # S_cut after pruning (bytes per sample)
    result_bytes: int

    @property
    def edge_macs(self) -> int:
        return sum(self.layer_macs[: self.cut])

    @property
    def cloud_macs(self) -> int:
        return sum(self.layer_macs[self.cut :])


def plan_shape(
    analysis: ModelAnalysis,
    groups: list[ChannelGroup],
    cut: int,
    ratios: Sequence[float],
    round_to: int = PruneConfig.round_to,
    transfer: str = "fp32",
) -> PlanShape:
    """What :func:`prune` would produce for (cut, ratios), from the analysis alone; ``cut_bytes`` as sent in
    ``transfer``."""
    n = analysis.n_layers
    if len(ratios) != cut:
        raise CpcdrlError(f"{len(ratios)} keep ratios given for cut {cut}: need exactly one per edge layer")
    in_keep = [1.0] * n
    out_keep = [1.0] * n
    for g in groups:
        if g.leader > cut or not g.prunable_at(cut):
            continue
        frac = kept_channels(float(ratios[g.leader - 1]), g.channels, round_to) / g.channels
        for j in g.producers:
            out_keep[j - 1] = frac
            if analysis.layers[j - 1].kind == "dwconv":
                in_keep[j - 1] = frac
        for c in g.consumers:
            in_keep[c - 1] = frac
    macs = []
    for layer, fi, fo in zip(analysis.layers, in_keep, out_keep):
        # a depthwise conv's MACs scale with its channels once (C_in / groups stays 1)
        scale = fo if layer.kind == "dwconv" else fi * fo
        macs.append(int(round(layer.macs * scale)))
    point = analysis.points[cut]
    cut_bytes = point.out_bytes if cut in (0, n) else int(round(point.out_bytes * out_keep[cut - 1]))
    if cut < n:
        cut_bytes = wire_bytes(cut_bytes, transfer)
    return PlanShape(cut, tuple(in_keep), tuple(out_keep), tuple(macs), cut_bytes, analysis.result_bytes)
