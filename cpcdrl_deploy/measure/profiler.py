"""``cpcdrl profile``: measure per-layer latency tables on a host, and the link to it.

The host side builds small ONNX models: every unit (layer) of the model at
each point of a grid of kept input/output channel fractions, and the unpruned
head and tail at every cut. Weights are a constant: latency does not depend
on their values and constant tensors gzip to almost nothing, which matters on
a 200 KB/s link. ``cpcdrl_deploy/ondevice/timer.py`` times them on the device.

Results are saved after every batch to ``<out>.partial``: an interrupted run
resumes from there, and the profile itself is only written, atomically, when
everything is measured.
"""

from __future__ import annotations

import copy
import gzip
import json
import platform
import random
import shlex
import statistics
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from cpcdrl_deploy.compress.pruning import ChannelGroup, PruneConfig, channel_groups, plan_shape, prune
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.fileio import atomic_write_json
from cpcdrl_deploy.core.progress import Ticker, no_ticker
from cpcdrl_deploy.devices.hostload import HostSampler, load_in_windows
from cpcdrl_deploy.devices.remote import Device
from cpcdrl_deploy.devices.testbed import load_state
from cpcdrl_deploy.measure.profile import LinkProfile, ModelTable, Profile, load_profile, save_profile, table_key
from cpcdrl_deploy.measure.runtimes import RUNTIMES, check_runtime, get_runtime
from cpcdrl_deploy.models.graph import ModelAnalysis, analyze
from cpcdrl_deploy.models.zoo import UnitModel, build_model, get_entry

PROFILER = Path(__file__).resolve().parents[1] / "ondevice" / "timer.py"
DEFAULT_GRID = (0.25, 0.5, 0.75, 1.0)
M = TypeVar("M", bound=nn.Module)
WEIGHTS = "constant-per-tensor"  # see make_constant; older profiles shared one constant (and one tensor) between layers
Log = Callable[[str], None]


def timing_file(m: nn.Module, shape: tuple[int, ...], runtime: str = "onnxruntime") -> bytes:
    """``m`` (a unit or units of a model made constant by ``make_constant``) as ``runtime`` runs it, gzip-compressed."""
    return gzip.compress(get_runtime(runtime).build(m, shape), 6)


def make_constant(m: M) -> M:
    """In place: each weight tensor one constant of its own (~0.01), batch-norm statistics neutral, no gradients.

    Units close over the model's modules, so this changes the model. Why one
    constant *per tensor*: the ONNX exporter merges initializers that are
    equal, so with one value for all, layers of the same shape shared one
    weight tensor and a whole model ran from a fraction of its real working
    set: the VGG16 head timed 8-25 % and MobileNet's ~7 % faster than the
    same graph with trained (or random) weights, here on the host. Distinct
    constants keep every tensor and still gzip to almost nothing (VGG16: 59 KB).
    """
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        for i, p in enumerate(m.parameters()):
            p.fill_(0.01 * (1.0 + i / 1024.0))
        for name, b in m.named_buffers():
            if b.is_floating_point():
                b.fill_(1.0 if name.endswith("running_var") else 0.0)
    return m


def _in_group(analysis: ModelAnalysis, groups: list[ChannelGroup], t: int) -> ChannelGroup | None:
    """The channel group feeding layer t's input."""
    for g in groups:
        if t in g.consumers or (t in g.producers and t != g.leader):
            return g
    return None


def layer_variants(
    analysis: ModelAnalysis, groups: list[ChannelGroup], t: int, grid: tuple[float, ...]
) -> list[tuple[int, list[float]]]:
    """(cut N, ratios) plans that put layer t at each reachable (in, out) grid point."""
    n = analysis.n_layers
    gin = _in_group(analysis, groups, t)
    gout = next((g for g in groups if g.leader == t), None)
    ins = grid if gin is not None else (1.0,)
    outs = grid if gout is not None else (1.0,)
    plans = []
    for fi in ins:
        for fo in outs:
            if gin is not None and gout is not None and gin is gout and fi != fo:
                continue
            r = [1.0] * n
            if gin is not None:
                r[gin.leader - 1] = fi
            if gout is not None:
                r[t - 1] = fo
            plans.append((n, r))
    return plans


def _layer_alone(pruned: UnitModel, analysis: ModelAnalysis, t: int) -> tuple[nn.Module, torch.Tensor]:
    """Layer t's unit of ``pruned`` (weights frozen as constants) and the input it gets there: zeros through the
    units before it.

    A unit holding several prunable layers (a residual block) is timed whole
    by the heads and tails; its layers are timed one by one, each convolution
    alone on the input it gets inside the block (the add, its batch norms and
    activations are left to the whole-model anchors, latency.anchored).
    """
    const = make_constant(pruned)
    units = const.units()
    layer = analysis.layers[t - 1]
    x = torch.zeros(1, *analysis.input_shape)
    if len(analysis.unit_layers()[layer.unit]) == 1:
        with torch.no_grad():
            for u in units[: layer.unit]:
                x = u(x)
        return units[layer.unit], x
    mod = dict(const.named_modules())[layer.name]
    seen: list[torch.Tensor] = []
    handle = mod.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    try:
        with torch.no_grad():
            for u in units[: layer.unit + 1]:
                x = u(x)
    finally:
        handle.remove()
    return mod, seen[0]


@dataclass(frozen=True)
class _Writer:
    """Where build_jobs puts each timed model: ``workdir/<id><suffix>.gz``, exported for ``runtime``."""

    workdir: Path
    ext: str
    runtime: str

    def write(self, jid: str, module: nn.Module, input_shape: tuple[int, ...]) -> str:
        f = f"{jid}{self.ext}"
        (self.workdir / f).write_bytes(timing_file(module, tuple(input_shape), self.runtime))
        return f


_BUILT: OrderedDict[tuple, tuple[list[dict], ModelAnalysis, dict[str, bytes]]] = OrderedDict()
_BUILT_KEEP = 8  # models x grids x runtimes remembered by build_jobs in one process


def build_jobs(
    model_name: str,
    grid: tuple[float, ...],
    workdir: Path,
    log: Log,
    tick: Ticker = no_ticker,
    runtime: str = "onnxruntime",
    classes: int | None = None,
) -> tuple[list[dict], ModelAnalysis]:
    """Write the gzipped model files (ONNX, or LiteRT for ``runtime="litert"``) and return the job list (id, file,
    input_shape, meta).

    The files depend only on the model, the grid and the runtime (constant weights), so a process that
    profiles the same model again (``bench --profile-before-rounds``: the edge, then this host) writes
    the files it built the first time instead of exporting and converting them again.
    """
    key = (model_name, tuple(grid), runtime, WEIGHTS, classes)
    if key in _BUILT:
        _BUILT.move_to_end(key)
        jobs, analysis, files = _BUILT[key]
        for name, blob in files.items():
            (workdir / name).write_bytes(blob)
        log(f"{model_name}: the {len(jobs)} models built earlier in this run")
        return copy.deepcopy(jobs), analysis
    jobs, analysis = _build_jobs(model_name, grid, workdir, log, tick, runtime, classes)
    _BUILT[key] = (copy.deepcopy(jobs), analysis, {j["file"]: (workdir / j["file"]).read_bytes() for j in jobs})
    while len(_BUILT) > _BUILT_KEEP:
        _BUILT.popitem(last=False)
    return jobs, analysis


def _build_jobs(
    model_name: str, grid: tuple[float, ...], workdir: Path, log: Log, tick: Ticker, runtime: str, classes: int | None
) -> tuple[list[dict], ModelAnalysis]:
    out = _Writer(workdir, RUNTIMES[runtime].suffix + ".gz", runtime)
    entry = get_entry(model_name)
    model: UnitModel = build_model(model_name, classes)
    analysis = analyze(model, entry.input_size, model_name)
    groups = channel_groups(model, analysis)
    jobs = _layer_jobs(
        model, analysis, groups, grid, out, lambda t: tick(f"{model_name}: exporting layers", t, analysis.n_layers)
    )
    jobs += _segment_jobs(model, analysis, groups, grid, out)
    jobs += _pruned_head_jobs(model, analysis, groups, grid, out, log)
    probes = _probe_files(analysis, out)
    jobs += _split_jobs(model, analysis, out)
    jobs += _overhead_jobs(out)
    _spread_probes(jobs, probes)
    log(f"exported {len(jobs)} models")
    return jobs, analysis


def _layer_jobs(
    model: UnitModel,
    analysis: ModelAnalysis,
    groups: list[ChannelGroup],
    grid: tuple[float, ...],
    out: _Writer,
    done: Callable[[int], None],
) -> list[dict]:
    """Each prunable layer alone at every (input keep, output keep) of the grid, and a depthwise one off its fast
    layout."""
    jobs: list[dict] = []
    for t in range(1, analysis.n_layers + 1):
        for cut, ratios in layer_variants(analysis, groups, t, grid):
            shape = plan_shape(analysis, groups, cut, ratios)
            fi, fo = shape.in_keep[t - 1], shape.out_keep[t - 1]
            unit, x = _layer_alone(
                prune(model, analysis, cut, ratios, None, PruneConfig(refit=False), groups).model, analysis, t
            )
            jid = f"L{t}_i{fi:.4f}_o{fo:.4f}"
            with torch.no_grad():
                io_bytes = 4 * (
                    x.numel() + unit(x).numel()
                )  # float32 in and out: what a run alone copies across ORT's boundary
            f = out.write(jid, unit, tuple(x.shape[1:]))
            jobs.append(
                {
                    "id": jid,
                    "file": f,
                    "input_shape": [1, *x.shape[1:]],
                    "kind": "layer",
                    "layer": t,
                    "in_keep": fi,
                    "out_keep": fo,
                    "io_bytes": io_bytes,
                }
            )
        if analysis.layers[t - 1].kind == "dwconv":
            jobs.append(_misaligned_job(model, analysis, groups, t, out.workdir, out.ext, out.runtime))
        done(t)
    return jobs


def _segment_jobs(
    model: UnitModel, analysis: ModelAnalysis, groups: list[ChannelGroup], grid: tuple[float, ...], out: _Writer
) -> list[dict]:
    """Each unit of several prunable layers (a residual block: the segment between two cut points) timed whole at
    every grid keep of the groups inside it.

    Its layers are timed one by one, each convolution alone (``_layer_alone``);
    the block's add, batch norms and activations, and the caches its layers
    share, are in none of those runs. The latency model prices a block from
    these timings (``latency.segment_ms``).
    """
    multi = {u: idx for u, idx in analysis.unit_layers().items() if len(idx) > 1}
    if not multi:
        return []
    n = analysis.n_layers
    jobs: list[dict] = []
    for keep in grid:
        ratios = [keep] * n
        shape = plan_shape(analysis, groups, n, ratios)
        units = make_constant(prune(model, analysis, n, ratios, None, PruneConfig(refit=False), groups).model).units()
        x = torch.zeros(1, *analysis.input_shape)
        with torch.no_grad():
            for u, unit in enumerate(units):
                y = unit(x)
                if u in multi:
                    idx = multi[u]
                    jid = f"S{u}_k{keep:.4f}"
                    jobs.append(
                        {
                            "id": jid,
                            "file": out.write(jid, unit, tuple(x.shape[1:])),
                            "input_shape": [1, *x.shape[1:]],
                            "kind": "segment",
                            "unit": u,
                            "first": idx[0],
                            "last": idx[-1],
                            "keep": keep,
                            "in_keep": list(shape.in_keep[idx[0] - 1 : idx[-1]]),
                            "out_keep": list(shape.out_keep[idx[0] - 1 : idx[-1]]),
                            "io_bytes": 4 * (x.numel() + y.numel()),
                        }
                    )
                x = y
    return jobs


def _pruned_head_jobs(
    model: UnitModel,
    analysis: ModelAnalysis,
    groups: list[ChannelGroup],
    grid: tuple[float, ...],
    out: _Writer,
    log: Log,
) -> list[dict]:
    """Whole heads pruned uniformly to each grid keep below 1 at every cut.

    The per-layer tables alone mispredict pruned heads (on the emulated Pi the
    unpruned head x the tables' ratio put three pruned VGG16 plans 18.6-20.0 %
    below their deployed p50), so the latency model anchors a pruned plan to
    these instead of scaling the unpruned head.
    """
    jobs: list[dict] = []
    for p in analysis.points:
        if not p.cuttable or p.index == 0:
            continue
        for keep in (k for k in grid if k < 1.0):
            ratios = [keep] * p.index
            shape = plan_shape(analysis, groups, p.index, ratios)
            pruned = make_constant(
                prune(model, analysis, p.index, ratios, None, PruneConfig(refit=False), groups).model
            )
            jid = f"head{p.index}_k{keep:.4f}"
            f = out.write(jid, nn.Sequential(*pruned.units()[: p.unit_boundary]), tuple(analysis.input_shape))
            jobs.append(
                {
                    "id": jid,
                    "file": f,
                    "input_shape": [1, *analysis.input_shape],
                    "kind": "pruned_head",
                    "cut": p.index,
                    "keep": keep,
                    "in_keep": list(shape.in_keep[: p.index]),
                    "out_keep": list(shape.out_keep[: p.index]),
                }
            )
        log(f"exported pruned heads at cut {p.index}")
    return jobs


def _probe_files(analysis: ModelAnalysis, out: _Writer) -> list[tuple[str, int, str, list[int], str]]:
    """The host's channel block (see latency.blocked_keep): one 3x3 conv at output channel counts on both sides
    of the block boundaries a CPU might use; for a model with depthwise convs, the channel counts they run fast at."""
    files = []
    for c in BLOCK_PROBE_CHANNELS:
        conv = nn.Sequential(nn.Conv2d(64, c, 3, padding=1), nn.ReLU())
        files.append(("block", c, out.write(f"block{c}", make_constant(conv), (64, 16, 16)), [1, 64, 16, 16], "block"))
    if any(L.kind == "dwconv" for L in analysis.layers):  # (dw_alignment)
        for c in DW_PROBE_CHANNELS:
            dw = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.ReLU())
            files.append(("dw", c, out.write(f"dw{c}", make_constant(dw), (c, 16, 16)), [1, c, 16, 16], "dwprobe"))
    return files


def _split_jobs(model: UnitModel, analysis: ModelAnalysis, out: _Writer) -> list[dict]:
    """The unpruned head and tail at every cut, each timed as served (one model, one run)."""
    units = make_constant(model).units()
    x = torch.zeros(1, *analysis.input_shape)
    shapes = [tuple(x.shape[1:])]
    with torch.no_grad():
        for u in units:
            x = u(x)
            shapes.append(tuple(x.shape[1:]))
    jobs = []
    for p in analysis.points:
        if not p.cuttable:
            continue
        b = p.unit_boundary
        if b > 0:
            f = out.write(f"head{p.index}", nn.Sequential(*units[:b]), shapes[0])
            jobs.append(
                {"id": f"head{p.index}", "file": f, "input_shape": [1, *shapes[0]], "kind": "head", "cut": p.index}
            )
        if b < len(units):
            f = out.write(f"tail{p.index}", nn.Sequential(*units[b:]), shapes[b])
            jobs.append(
                {"id": f"tail{p.index}", "file": f, "input_shape": [1, *shapes[b]], "kind": "tail", "cut": p.index}
            )
    return jobs


def _overhead_jobs(out: _Writer) -> list[dict]:
    """ONNX Runtime's cost of one run() call: a ReLU at several sizes.

    Each layer was timed as its own run, so the latency model charges this
    once per side, not once per layer. Part of it grows with the tensors
    copied in and out (a layer alone gets its input from numpy and hands its
    output back; inside a model they stay put), so the latency model fits
    fixed + per byte.
    """
    jobs = []
    for n in OVERHEAD_ELEMENTS:
        f = out.write(f"overhead{n}", nn.ReLU(), (n, 1, 1))
        jobs.append(
            {
                "id": "overhead" if n == 1 else f"overhead{n}",
                "file": f,
                "input_shape": [1, n, 1, 1],
                "kind": "overhead",
                "io_bytes": 8 * n,
            }
        )
    return jobs


def _spread_probes(jobs: list[dict], probes: list[tuple[str, int, str, list[int], str]]) -> None:
    """The channel-block probes in BLOCK_PROBE_PASSES passes, each pass a separate set of jobs (the run's seeded
    shuffle, _spread_jobs, then puts them at independent places): this VM has slow spells of 0.5-5 s, and one pass
    of these 1 ms models fits inside one."""
    for k in range(BLOCK_PROBE_PASSES):
        at = (len(jobs) * k) // max(1, BLOCK_PROBE_PASSES - 1)
        jobs[at:at] = [
            {"id": f"{prefix}{c}_p{k}", "file": f, "input_shape": shape, "kind": kind, "channels": c}
            for prefix, c, f, shape, kind in probes
        ]


def _misaligned_job(
    model: UnitModel, analysis: ModelAnalysis, groups: list[ChannelGroup], t: int, workdir: Path, ext: str, runtime: str
) -> dict:
    """Depthwise layer t alone at one channel fewer than it has (an odd count): its price off the fast layout.

    Some runtimes run a depthwise conv whose channel count is not a multiple
    of a small number on a much slower path (benchmarks/results/
    channel_alignment-*.md); the grid's channel counts never show it.
    """
    n, L = analysis.n_layers, analysis.layers[t - 1]
    g = _in_group(analysis, groups, t)
    if g is None or L.out_channels < 2:
        raise CpcdrlError(f"{analysis.model} layer {t}: a depthwise conv without a prunable channel group")
    ratios = [1.0] * n
    ratios[g.leader - 1] = (L.out_channels - 1) / L.out_channels
    cfg = PruneConfig(refit=False, round_to=1)
    unit, x = _layer_alone(prune(model, analysis, n, ratios, None, cfg, groups).model, analysis, t)
    jid = f"L{t}_misaligned"
    f = f"{jid}{ext}"
    (workdir / f).write_bytes(timing_file(unit, tuple(x.shape[1:]), runtime))
    return {
        "id": jid,
        "file": f,
        "input_shape": [1, *x.shape[1:]],
        "kind": "misaligned",
        "layer": t,
        "channels": L.out_channels - 1,
    }


def dw_alignment(ms_by_channels: dict[int, float], slow: float = 2.0) -> int:
    """The multiple a depthwise conv's channel count must be to run at full speed, from ``DW_PROBE_CHANNELS``.

    Per channel, each probed count is compared with 64 channels; a count more
    than ``slow`` times as costly per channel is off the fast path (the gap
    where there is one is several-fold, far outside timing noise). The
    alignment is the smallest of 1, 2, 4, 8, 16 whose every probed multiple
    is fast; 1 when every count is.
    """
    base = ms_by_channels[64] / 64
    fast = {c: ms / c <= slow * base for c, ms in ms_by_channels.items()}
    return next((a for a in (1, 2, 4, 8, 16) if all(ok for c, ok in fast.items() if c % a == 0)), 16)


def probe_model(model_name: str, classes: int | None = None) -> tuple[bytes, list[int], int]:
    """(gzipped ONNX, input shape, cut) of the speed probe: the whole unpruned model, as the profiler times it.

    It is the profile's ``head{N}`` model byte for byte (same constant weights,
    same export), so ``deploy`` can time it again beside the requests and
    compare with the profile's entry: how much faster or slower the host is
    now than when it was profiled.
    """
    entry = get_entry(model_name)
    model = make_constant(build_model(model_name, classes))
    a = analyze(model, entry.input_size, model_name)
    return timing_file(nn.Sequential(*model.units()), tuple(a.input_shape)), [1, *a.input_shape], a.n_layers


OVERHEAD_ELEMENTS = (1, 4096, 32768, 262144)  # ReLU sizes for the run overhead: 8 B to 2 MB in + out
BLOCK_PROBE_CHANNELS = (32, 33, 48, 49, 56, 57, 60, 61, 64)  # 64 - b and 65 - b for b = 32, 16, 8, 4, and 64
BLOCK_PROBE_PASSES = 3
DW_PROBE_CHANNELS = (64, 63, 62, 60, 56, 48)  # multiples of 1, 2, 4, 8 and 16 (dw_alignment)
STATS = ("ms", "median_ms", "p10_ms", "p90_ms")  # the statistics a table entry holds ("ms": the sustained mean)
COLD_GAP_MS = 20.0  # idle before each "as served" run of a whole head or tail (timer.cold_runs)
WHOLE_KINDS = ("head", "pruned_head", "tail")  # the whole models the latency model anchors to
# A model whose passes disagree by more than this factor is timed again (see _disturbed). On undisturbed
# emulated-Pi profiles few models exceed it; a profile with other work beside it had most of them over it.
RETIME_SPREAD = 2.0
RETIME_TRIES = 2
# Each whole head, pruned head and tail is timed in this many passes at places spread over the run (see
# _spread_jobs): the latency model anchors every plan to these few models, so one slow spell in one of them
# mis-prices every plan at its cut, while a table sum averages many layers timed at many moments.
WHOLE_PASSES = 3
PASS_MARK = "#pass"  # a whole model's later passes: "<job id>#pass<k>"
ORDER_SEED = 0  # the run's job order: shuffled, the same on every resume


def channel_block(ms_by_channels: dict[int, float]) -> int:
    """The channel block a host's convolutions compute in, from one conv timed at ``BLOCK_PROBE_CHANNELS``.

    With blocks of b channels, 65 - b output channels cost a whole block more
    than 64 - b (most of the step from 64 - b to 64); with no blocks, one
    channel more costs 1/64 of the conv. The largest b whose step is at least
    3/4 of the way to 64 is the block; 1 when there is none.
    """
    t = ms_by_channels
    for b in (32, 16, 8, 4):
        lo, hi, full = t[64 - b], t[65 - b], t[64]
        if full > lo and hi - lo >= 0.75 * (full - lo):
            return b
    return 1


def measure_link(
    dev: Device, sizes: tuple[int, ...] = (32_000, 128_000, 512_000), log: Log = lambda s: None
) -> LinkProfile:
    """Bandwidth each way from timed transfers of several sizes (least-squares slope), RTT from tiny round trips."""
    echo, stream = getattr(dev, "echo_rtt_ms", None), getattr(dev, "stream_s", None)
    if echo is None or stream is None:
        raise CpcdrlError(f"{dev.name}: the link can only be measured over SSH")
    rtt = echo()
    up, down = [], []
    for n in sizes:
        # the faster of two tries: on a shared link and a throttled device, noise only ever adds time
        up.append((n, min(stream(n, upload=True) for _ in range(2))))
        down.append((n, min(stream(n, upload=False) for _ in range(2))))
        log(f"link: {n} bytes up {up[-1][1]:.2f} s, down {down[-1][1]:.2f} s")
    up_s, down_s = _ls_slope(up), _ls_slope(down)  # seconds per byte
    return LinkProfile(
        uplink_bytes_per_s=1.0 / up_s if up_s > 0 else float("inf"),
        downlink_bytes_per_s=1.0 / down_s if down_s > 0 else float("inf"),
        rtt_ms=rtt,
    )


def with_request_probe(dev: Device, link: LinkProfile, bind: str, log: Log = lambda s: None) -> LinkProfile:
    """``link`` with the per-request overhead and the uplink rate of real requests (linkprobe.py), or as it was if
    the probe fails."""
    from cpcdrl_deploy.measure.request_probe import measure_request_link

    try:
        res = measure_request_link(dev, bind, link.rtt_ms, log=log)
    except Exception as exc:  # noqa: BLE001 - an optional probe must not cost the tables just timed
        log(f"request probe skipped ({str(exc) or type(exc).__name__}); the link keeps the SSH figures")
        return link
    res["ssh_uplink_bytes_per_s"] = link.uplink_bytes_per_s
    return link.model_copy(
        update={
            "uplink_bytes_per_s": res["bytes_per_s"],
            "request_overhead_ms": res["request_overhead_ms"],
            "request_probe": res,
        }
    )


def _profiler_failed(dev: Device, rc: int, err: str) -> CpcdrlError:
    return CpcdrlError(f"{dev.name}: profiler failed: {err.strip().splitlines()[-1] if err.strip() else rc}")


def profiler_facts(dev: Device, remote: str) -> dict:
    """The device's runtime facts (``timer.py facts``), with the profiler already in REMOTE."""
    rc, out, err = dev.run(f"{shlex.quote(dev.python)} {shlex.quote(remote + '/timer.py')} facts", timeout=120)
    if rc != 0:
        raise _profiler_failed(dev, rc, err)
    return json.loads(out.strip().splitlines()[-1])


def time_on_device(dev: Device, remote: str, job_file: Path, opts: str, timeout: float) -> dict[str, dict]:
    """Run ``timer.py time`` on DEV over JOB_FILE (uploaded as REMOTE/job.json; the profiler and the
    model files already in REMOTE) with the profiler options OPTS, and return its results by job id.

    The one command line every profiling caller shares (``profile_host`` and the benchmarks), so a change
    of the profiler's interface has one place to go."""
    dev.put(job_file, f"{remote}/job.json")
    cmd = (
        f"{shlex.quote(dev.python)} {shlex.quote(remote + '/timer.py')} time {shlex.quote(remote + '/job.json')} {opts}"
    )
    rc, out, err = dev.run(cmd, timeout=timeout)
    if rc != 0:
        raise _profiler_failed(dev, rc, err)
    return {r.pop("id"): r for r in map(json.loads, out.strip().splitlines())}


def profile_host(
    dev: Device,
    models: list[str],
    out: Path,
    grid: tuple[float, ...] = DEFAULT_GRID,
    threads: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    measure_link_too: bool = True,
    rounds: int = 4,
    batch: int = 60,
    window_ms: float = 100.0,
    log: Log = lambda s: None,
    tick: Ticker = no_ticker,
    runtime: str | Sequence[str] = "onnxruntime",
    request_probe_at: str | None = None,
    cold_gap_ms: float = COLD_GAP_MS,
    retime_tries: int = RETIME_TRIES,
    classes: int | None = None,
    whole_passes: int = WHOLE_PASSES,
) -> Profile:
    """Profile ``models`` on ``dev``; resumes from ``out.partial``; writes ``out`` atomically at the end.

    ``runtime``: which edge runtime runs the models (runtimes.py); its tables
    go under ``table_key(model, runtime)``, beside the other runtime's. Given
    several, every model is built for each and the copies are timed
    side by side in the same batches and passes (a unit in ONNX Runtime, then
    the same unit in LiteRT, ...): the runtimes are compared within the same
    seconds, so the host's drift between two runs cannot decide which
    runtime the optimiser picks.

    Each model is timed in ``rounds`` passes over a batch of ``batch`` models,
    for at least ``window_ms`` per pass, and reports its median pass
    (``timer.time_jobs``); docs/measuring.md says why these defaults.

    ``request_probe_at``: an address of this host the device reaches; the
    link is then also timed with real KServe v2 requests to a server there
    (linkprobe.py), which sets its per-request overhead and uplink rate. A
    probe that fails is logged and the SSH figures stay: the tables are the
    expensive part and are kept either way.

    ``cold_gap_ms``: each whole head and tail is also timed as a served
    request finds it, after that much idle (``cold_median_ms``; 0: not).
    ``retime_tries``: how many more times a model whose passes disagree by
    more than ``RETIME_SPREAD`` is timed (0: never). ``whole_passes``: how
    many times each whole model is timed, spread over the run (``_spread_jobs``).
    ``classes``: the last layer's outputs (the checkpoints'; default: the zoo entry's), recorded in each table.
    """
    runtimes = [runtime] if isinstance(runtime, str) else list(dict.fromkeys(runtime))
    for rt in runtimes:
        check_runtime(dev, rt)  # also refuses an unknown runtime
    timing = (grid, threads, warmup, repeats, rounds, batch, window_ms, cold_gap_ms, retime_tries)
    run = _Run(*timing, runtimes, out.with_name(out.name + ".partial"), log, tick, classes, whole_passes)
    # another class count times other models: its partial results are not this run's
    partial = _load_partial(run.partial_path, dev.name, "+".join(runtimes) + (f"/{classes}" if classes else ""))
    remote = dev.mkdtemp()
    try:
        dev.put(PROFILER, f"{remote}/timer.py")
        facts = _host_facts(dev, remote, run)
        tables: dict[str, ModelTable] = {}
        # then this host's CPUs are the device's: say what else took them
        on_this_host = dev.name == "local" or "testbed" in facts
        for model_name in models:
            tables.update(_profile_model(dev, remote, model_name, run, partial, on_this_host))
        link = measure_link(dev, log=log) if measure_link_too else None
        if link is not None and request_probe_at:
            link = with_request_probe(dev, link, request_probe_at, log)
    finally:
        dev.remove(remote)
    prof = Profile(
        name=dev.name,
        kind="measured",
        link=link,
        host=facts,
        tables=_with_older_tables(out, facts, tables),
        notes=f"measured by cpcdrl profile on {dev.name}",
    )
    save_profile(prof, out)
    run.partial_path.unlink(missing_ok=True)
    return prof


@dataclass(frozen=True)
class _Run:
    """One ``profile_host`` call's settings (see its docstring)."""

    grid: tuple[float, ...]
    threads: int
    warmup: int
    repeats: int
    rounds: int
    batch: int
    window_ms: float
    cold_gap_ms: float
    retime_tries: int
    runtimes: list[str]
    partial_path: Path
    log: Log
    tick: Ticker
    classes: int | None = None
    whole_passes: int = WHOLE_PASSES

    def __post_init__(self) -> None:
        if self.whole_passes < 1:
            raise CpcdrlError(f"whole_passes {self.whole_passes}: expected 1 or more")


def _load_partial(path: Path, host: str, tag: str) -> dict:
    """What an interrupted run of the same host and runtimes measured already (``{"results": {model: {job: ...}}}``)."""
    partial = json.loads(path.read_text()) if path.exists() else {}
    if partial and (partial.get("host") != host or partial.get("runtime", "onnxruntime") != tag):
        partial = {}
    partial.setdefault("runtime", tag)
    partial.setdefault("host", host)
    partial.setdefault("results", {})
    return partial


def _host_facts(dev: Device, remote: str, run: _Run) -> dict:
    """The device's runtime facts and this run's settings; for a testbed, what it emulates."""
    facts = profiler_facts(dev, remote)
    facts.update(
        threads=run.threads,
        warmup=run.warmup,
        repeats=run.repeats,
        rounds=run.rounds,
        round_window_ms=run.window_ms,
        cold_gap_ms=run.cold_gap_ms,
        retime_spread=RETIME_SPREAD,
        retime_tries=run.retime_tries,
        whole_passes=run.whole_passes,
        job_order=f"shuffled, seed {ORDER_SEED}",
    )
    tb = load_state(dev.name) if dev.name != "local" else None
    if tb is not None:  # say so: this "device" is this machine with a throttled CPU and a shaped link
        facts["testbed"] = {
            "cpu_share": tb.cpu,
            "throttle": tb.throttle,
            "cpu_pin": tb.cpu_pin,
            "bandwidth_bytes_per_s": tb.bandwidth_bytes_per_s,
            "emulated_on": platform.node(),
        }
        if tb.throttle == "quota":
            facts["testbed"]["cfs_period_us"] = tb.cfs_period_us
        else:
            facts["testbed"].update(
                duty_period_us=tb.duty_period_us,
                duty_on_us=tb.duty_on_us,
                measured_share=tb.measured_share,
                calibration_steal=tb.calibration_steal,
            )
    return facts


def _profile_model(
    dev: Device, remote: str, model_name: str, run: _Run, partial: dict, on_this_host: bool
) -> dict[str, ModelTable]:
    """``model_name``'s tables, one per runtime, keyed by ``table_key``; this host's load beside them when it is the
    device."""
    t_model = time.time()
    runtimes = run.runtimes
    with (
        tempfile.TemporaryDirectory() as tmp,
        HostSampler(interval_s=1.0) if on_this_host else nullcontext() as sampler,
    ):
        built = {
            rt: build_jobs(model_name, run.grid, Path(tmp), run.log, run.tick, rt, run.classes) for rt in runtimes
        }  # file names differ by suffix
        analysis = built[runtimes[0]][1]
        # the same order for every runtime (same length, same seed), so the interleaved copies stay side by side
        jobs = _interleave(
            [
                _spread_jobs([dict(j, id=_job_id(rt, j["id"], runtimes)) for j in built[rt][0]], run.whole_passes)
                for rt in runtimes
            ]
        )
        done = partial["results"].setdefault(model_name, {})
        _time_all(dev, remote, model_name, jobs, done, Path(tmp), run, partial)
        tables: dict[str, ModelTable] = {}
        for rt in runtimes:
            own = {j["id"]: _passes_pooled(done, _job_id(rt, j["id"], runtimes)) for j in built[rt][0]}
            table = _table(built[rt][0], own, analysis, run.grid, run.threads)
            table.measured_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())  # host.measured_at: the run's start
            table.runtime = rt
            table.classes = run.classes or get_entry(model_name).num_classes
            if len(runtimes) > 1:
                table.timed_with = [r for r in runtimes if r != rt]  # in the same batches and passes
            tables[table_key(model_name, rt)] = table
    if sampler is not None:  # stopped with the block: the whole model's timing, one window
        window = load_in_windows(sampler.samples, [(t_model, time.time())])[0]
        for table in tables.values():
            table.host_load = window
    return tables


def _time_all(
    dev: Device, remote: str, model_name: str, jobs: list[dict], done: dict, tmp: Path, run: _Run, partial: dict
) -> None:
    """Time every job not yet in ``done`` in batches, saving the partial file after each; retime disturbed ones."""
    todo = [j for j in jobs if j["id"] not in done]
    if len(todo) < len(jobs):
        run.log(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} already measured")
    run.tick(f"{model_name}: models timed on {dev.name}", len(done), len(jobs))

    def time_chunk(chunk: list[dict], n_rounds: int) -> dict[str, dict]:
        job_file = tmp / "job.json"
        job_file.write_text(
            json.dumps(
                [
                    {k: j[k] for k in ("id", "file", "input_shape")}
                    | ({"cold_gap_ms": run.cold_gap_ms} if run.cold_gap_ms > 0 and j["kind"] in WHOLE_KINDS else {})
                    for j in chunk
                ]
            )
        )
        opts = (
            f"--threads {run.threads} --warmup {run.warmup} --repeats {run.repeats} --rounds {n_rounds}"
            f" --min-time-ms {round(run.window_ms * n_rounds)}"
        )
        return time_on_device(dev, remote, job_file, opts, timeout=1800)

    still = 0  # models whose passes still disagree after the re-timing
    for start in range(0, len(todo), run.batch):
        chunk = todo[start : start + run.batch]
        for j in chunk:
            dev.put(tmp / j["file"], f"{remote}/{j['file']}")
        attempts = _time_with_retries(
            time_chunk,
            chunk,
            run.rounds,
            run.retime_tries,
            lambda n: run.log(
                f"{model_name}: timing {n} models again: their passes disagreed by more than {RETIME_SPREAD:g}x"
            ),
        )
        done.update({i: _pooled(a) for i, a in attempts.items()})
        atomic_write_json(run.partial_path, partial)
        still += sum(_disturbed(a[-1]) for a in attempts.values())
        run.tick(f"{model_name}: models timed on {dev.name}", len(done), len(jobs))
    if still:
        # a busy device is one cause; a small CPU share is another (at a third of a core, with nothing
        # else running, passes of millisecond models spread this much), so the warning names both
        run.log(
            f"warning: {model_name}: {still} of {len(jobs)} models still disagree by more than {RETIME_SPREAD:g}x"
            f" between passes (other work on {dev.name}, or a throttled or small CPU share);"
            " each keeps its attempt nearest the median pass"
        )


def _with_older_tables(out: Path, facts: dict, tables: dict[str, ModelTable]) -> dict[str, ModelTable]:
    """Profiling another model adds to the host's file: the tables already in ``out`` for the same host stay."""
    old = None
    if out.exists():
        try:
            old = load_profile(out)
        except CpcdrlError:
            old = None
    if old is not None and old.kind == "measured" and old.host and old.host.get("hostname") == facts.get("hostname"):
        return {**old.tables, **tables}
    return tables


def _time_with_retries(
    time_chunk: Callable[[list[dict], int], dict[str, dict]],
    chunk: list[dict],
    rounds: int,
    tries: int,
    say: Callable[[int], None],
) -> dict[str, list[dict]]:
    """Every attempt at each job of ``chunk``: one timing, then up to ``tries`` more of those still ``_disturbed``."""
    attempts = {i: [r] for i, r in time_chunk(chunk, rounds).items()}
    for _ in range(tries):
        again = [j for j in chunk if _disturbed(attempts[j["id"]][-1])]
        if not again:
            break
        say(len(again))
        # twice the passes, so one short batch is less likely to sit wholly inside one slow spell
        for i, r in time_chunk(again, 2 * rounds).items():
            attempts[i].append(r)
    return attempts


def _disturbed(r: dict) -> bool:
    """Whether a timed model's slowest pass took more than ``RETIME_SPREAD`` times its fastest."""
    m = r.get("round_means_ms") or []
    return bool(m) and min(m) > 0 and max(m) > RETIME_SPREAD * min(m)


def _pooled(attempts: list[dict]) -> dict:
    """One result from a model's timings: the attempt whose figure is nearest the median of all their passes.

    Why pool rather than keep the last attempt: a busy spell only adds time, and the median over every
    pass is not moved by a minority of slow ones, whichever attempt they fell in; the chosen attempt's
    own statistics (p10, p90, the as-served runs) then go with that level.
    """
    if len(attempts) == 1:
        return attempts[0]
    passes = [x for a in attempts for x in a["round_means_ms"]]
    level = statistics.median(passes)
    best = min(attempts, key=lambda a: abs(a["mean_ms"] - level))
    return {**best, "round_means_ms": passes, "retimed": len(attempts) - 1}


def _spread_jobs(jobs: list[dict], whole_passes: int, seed: int = ORDER_SEED) -> list[dict]:
    """The jobs in a seeded random order, each whole model ``whole_passes`` times (``<id>#pass<k>`` after the first).

    Why: built in order, a model's whole heads and tails came last, the
    largest together, and were timed within a few minutes of a 35-minute run
    while its layers spread over all of it. On the emulated Pi one such
    stretch timed MobileNetV3's last four heads at 1.5-1.9x their layer sums
    and the bench measured the whole model at the sums (fidelity lab note,
    benchmarks/results/fidelity/mobilenet_v3_small-96); in one batch, eight
    copies of that model timed 6.4-10.5 ms. Shuffled, no kind of model
    shares one stretch, and a whole model's passes fall at independent
    moments (Google Benchmark's random interleaving, the GUIDE's drift notes).
    """
    out = list(jobs)
    for j in jobs:
        if j["kind"] in WHOLE_KINDS:
            out += [dict(j, id=f"{j['id']}{PASS_MARK}{k}") for k in range(1, whole_passes)]
    random.Random(seed).shuffle(out)
    return out


def _passes_pooled(done: dict[str, dict], job_id: str) -> dict:
    """A job's result with its later passes (``_spread_jobs``) pooled in: the pass nearest the median of all their
    rounds (``_pooled``), and as-served runs the median of the passes'; the job's own result when it has none."""
    passes = [done[job_id]]
    while f"{job_id}{PASS_MARK}{len(passes)}" in done:
        passes.append(done[f"{job_id}{PASS_MARK}{len(passes)}"])
    if len(passes) == 1:
        return passes[0]
    retimed = sum(p.get("retimed") or 0 for p in passes)
    out = {**_pooled(passes), "retimed": retimed or None, "passes": len(passes)}
    cold = [p["cold_median_ms"] for p in passes if p.get("cold_median_ms")]
    if cold:
        out["cold_median_ms"] = statistics.median(cold)
    return out


def _job_id(runtime: str, job_id: str, runtimes: list[str]) -> str:
    """A job's id on the device: unchanged with one runtime (resumable from older partial files), ``runtime:id`` with
    several."""
    return job_id if len(runtimes) == 1 else f"{runtime}:{job_id}"


def _interleave(lists: list[list[dict]]) -> list[dict]:
    """Round-robin over the runtimes' job lists (built in the same order), so each batch holds each unit in every
    runtime."""
    out: list[dict] = []
    for i in range(max(map(len, lists))):
        out.extend(lst[i] for lst in lists if i < len(lst))
    return out


def _ls_slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 when all x are equal)."""
    mx, my = statistics.fmean(x for x, _ in points), statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx > 0 else 0.0


def _slope(points: list[dict], stat: str) -> float:
    """Least-squares ms per byte of ``stat`` over the overhead points (0 with fewer than two, never negative)."""
    return max(0.0, _ls_slope([(p["io_bytes"], p[stat]) for p in points])) if len(points) >= 2 else 0.0


def _layer_rows(layers: dict[int, list[dict]], misaligned: dict[int, dict], analysis: ModelAnalysis) -> list[dict]:
    """The table's layer rows: each timed layer's points, and its run off the fast channel layout where timed."""
    return [
        {
            "index": t,
            "name": L.name,
            "kind": L.kind,
            "in_channels": L.in_channels,
            "out_channels": L.out_channels,
            "points": pts,
        }
        | ({"misaligned": misaligned[t]} if t in misaligned else {})
        for t, pts in sorted(layers.items())
        for L in (analysis.layers[t - 1],)
    ]


def _table(jobs: list[dict], done: dict, analysis: ModelAnalysis, grid: tuple[float, ...], threads: int) -> ModelTable:
    layers: dict[int, list[dict]] = {}
    heads, tails, pruned_heads = [], [], []
    block_ms: dict[int, float] = {}
    dw_ms: dict[int, float] = {}
    misaligned: dict[int, dict] = {}
    overhead: dict[str, float] = {}
    overhead_points: list[dict] = []
    segments: dict[int, dict] = {}
    for j in jobs:
        r = done[j["id"]]
        # "ms" is the sustained mean (see cpcdrl_deploy/ondevice/timer.py); the per-run spread is kept beside it
        stats = {"ms": r["mean_ms"], **{k: r[k] for k in STATS[1:]}}
        if "round_means_ms" in r:  # every pass's mean, for a reader asking how much the host wandered
            stats["round_means_ms"] = r["round_means_ms"]
        if r.get("retimed"):  # timed again because its passes disagreed (_disturbed); its passes are all of them
            stats["retimed"] = r["retimed"]
        if r.get("passes"):  # a whole model timed at several moments of the run (_spread_jobs)
            stats["passes"] = r["passes"]
        if "cold_median_ms" in r:  # whole models: the median run after cold_gap_ms of idle, as a served request
            stats.update(cold_median_ms=r["cold_median_ms"], cold_gap_ms=r["cold_gap_ms"])
        if j["kind"] == "layer":
            layers.setdefault(j["layer"], []).append(
                {"in_keep": j["in_keep"], "out_keep": j["out_keep"], "io_bytes": j["io_bytes"], **stats}
            )
        elif j["kind"] == "overhead":
            overhead_points.append({"io_bytes": j["io_bytes"], **stats})
            if j["id"] == "overhead":
                overhead = stats
        elif j["kind"] == "head":
            heads.append({"cut": j["cut"], **stats})
        elif j["kind"] == "segment":
            seg = segments.setdefault(j["unit"], {k: j[k] for k in ("unit", "first", "last")} | {"points": []})
            seg["points"].append({k: j[k] for k in ("keep", "in_keep", "out_keep", "io_bytes")} | stats)
        elif j["kind"] == "pruned_head":
            pruned_heads.append({k: j[k] for k in ("cut", "keep", "in_keep", "out_keep")} | stats)
        elif j["kind"] == "misaligned":
            misaligned[j["layer"]] = {"channels": j["channels"], **stats}
        elif j["kind"] == "dwprobe":  # as the block probe: the fastest tenth, the fastest pass
            dw_ms[j["channels"]] = min(dw_ms.get(j["channels"], float("inf")), r["p10_ms"])
        elif j["kind"] == "block":
            # the fastest tenth of a job's runs (its middle rounds), then the fastest of the passes spread over
            # the run: this asks where the steps are, not how fast a deployment runs, and spells only add time
            block_ms[j["channels"]] = min(block_ms.get(j["channels"], float("inf")), r["p10_ms"])
        else:
            tails.append({"cut": j["cut"], **stats})
    return ModelTable.model_validate(
        {
            "grid": list(grid),
            "threads": threads,
            "weights": WEIGHTS,  # how the timed models were made: the speed probe must be made the same way
            "total_macs": analysis.total_macs,
            "run_overhead_ms": overhead.get("ms", 0.0),
            "run_overhead": overhead or None,  # per statistic: medians are corrected with the median overhead
            "run_overhead_points": sorted(overhead_points, key=lambda p: p["io_bytes"]),
            "run_overhead_per_io_byte": {k: _slope(overhead_points, k) for k in STATS if k in overhead},
            "channel_block": channel_block(block_ms) if block_ms else 1,
            "channel_block_probe_ms": {str(c): ms for c, ms in sorted(block_ms.items())},
            **(
                {
                    "dw_alignment": dw_alignment(dw_ms),
                    "dw_alignment_probe_ms": {str(c): ms for c, ms in sorted(dw_ms.items())},
                }
                if dw_ms
                else {}
            ),
            "layers": _layer_rows(layers, misaligned, analysis),
            "segments": [
                segments[u] | {"points": sorted(segments[u]["points"], key=lambda p: p["keep"])}
                for u in sorted(segments)
            ],
            "heads": sorted(heads, key=lambda h: h["cut"]),
            "pruned_heads": sorted(pruned_heads, key=lambda h: (h["cut"], h["keep"])),
            "tails": sorted(tails, key=lambda h: h["cut"]),
        }
    )
