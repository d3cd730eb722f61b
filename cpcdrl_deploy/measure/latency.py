"""Latency models: (plan shape) -> milliseconds. Pure: no I/O, no torch.

The analytic model is the paper's Eq. 5-7:
    edge     = sum_{k<=i} MACs_k / F_e
    transfer = S_i / B                      (0 when i = N: nothing is sent)
    cloud    = sum_{k>i} MACs_k / F_c
plus two terms the paper leaves out, both visible and 0 under ``paper``:
the link's round-trip time and the result's return trip (``count_result_return``).
Measured-table models (``cpcdrl profile``) implement the same ``LatencyModel``
protocol, so the optimiser does not care which one it gets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from cpcdrl_deploy.compress.pruning import PlanShape
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.measure.profile import LayerPoint, LayerRow, LinkProfile, ModelTable, Profile, SegmentRow, table_key


@dataclass(frozen=True)
class LatencyBreakdown:
    edge_ms: float
    transfer_ms: float
    cloud_ms: float
    return_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.edge_ms + self.transfer_ms + self.cloud_ms + self.return_ms

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "total_ms": self.total_ms}


class LatencyModel(Protocol):
    """Anything that prices a plan; ``describe`` names it in reports."""

    def predict(self, model: str, shape: PlanShape) -> LatencyBreakdown: ...

    def describe(self) -> str: ...


def transfer_ms(n_bytes: int, bytes_per_s: float, rtt_ms: float = 0.0) -> float:
    """Time to move ``n_bytes`` over a link of ``bytes_per_s`` (Eq. 6), plus one RTT."""
    return 1000.0 * n_bytes / bytes_per_s + rtt_ms


def throttled_latencies(
    work_ms: float, idle_ms: float, share: float, period_ms: float, tick_ms: float = 0.0, requests: int = 500
) -> list[float]:
    """Latency of each of ``requests`` runs of ``work_ms`` of CPU time on a device under a CFS quota.

    Linux CFS bandwidth control lets a cgroup run ``share x period_ms`` per
    period; once that is spent, it stalls until the period ends (no carry-over).
    The kernel notices the quota is spent only at a scheduler tick (1/CONFIG_HZ,
    4 ms at HZ=250), so a quota shorter than a tick is overrun, and the debt is
    repaid by staying throttled for as many periods as it takes: in effect the
    device runs in bursts of max(quota, tick) and stalls burst/share - burst.
    That is what is modelled (``tick_ms`` = 0: an ideal CFS). Between runs the
    device idles ``idle_ms`` (waiting for the cloud's answer). One thread.
    Runs shorter than a burst are usually as fast as the host; the rest stall.
    """
    if not (share > 0 and period_ms > 0 and work_ms >= 0 and idle_ms >= 0 and tick_ms >= 0):
        raise ValueError("share, period_ms must be > 0 and work_ms, idle_ms, tick_ms >= 0")
    if share >= 1.0:
        return [work_ms] * requests  # one thread can never spend more than a period per period
    quota = max(share * period_ms, tick_ms)  # the burst the kernel actually lets through
    period_ms = quota / share
    t, end, budget = 0.0, period_ms, quota
    out = []
    for _ in range(requests):
        start, need = t, work_ms
        while need > 1e-12:
            if t >= end:  # a new period: a fresh quota
                end += period_ms * (math.floor((t - end) / period_ms) + 1)
                budget = quota
            if budget <= 1e-12:  # throttled to the end of the period
                t = end
                continue
            run = min(need, budget, end - t)
            t, need, budget = t + run, need - run, budget - run
        out.append(t - start)
        t += idle_ms
    return out


@dataclass(frozen=True)
class AnalyticLatencyModel:
    """The paper's MAC-based model (Eq. 5-7)."""

    edge_macs_per_s: float
    cloud_macs_per_s: float
    uplink_bytes_per_s: float
    downlink_bytes_per_s: float
    rtt_ms: float = 0.0
    count_result_return: bool = False
    request_overhead_ms: float = 0.0  # per request, beyond bytes / B + RTT (profiles.LinkProfile)

    def predict(self, model: str, shape: PlanShape) -> LatencyBreakdown:
        offloads = shape.cut < len(shape.layer_macs)
        return LatencyBreakdown(
            edge_ms=1000.0 * shape.edge_macs / self.edge_macs_per_s,
            cloud_ms=1000.0 * shape.cloud_macs / self.cloud_macs_per_s,
            **_link_terms(self, shape, offloads),
        )

    @classmethod
    def over(cls, edge_macs_per_s: float, cloud_macs_per_s: float, link: LinkProfile) -> AnalyticLatencyModel:
        """The MAC model at these compute rates over ``link`` (every term of the link: rates, RTT, per-request
        overhead)."""
        return cls(
            edge_macs_per_s,
            cloud_macs_per_s,
            link.uplink_bytes_per_s,
            link.downlink_bytes_per_s,
            link.rtt_ms,
            link.count_result_return,
            link.request_overhead_ms,
        )

    def describe(self) -> str:
        return (
            f"the analytic MAC model (Eq. 5-7): edge {self.edge_macs_per_s / 1e6:g} MMAC/s, cloud"
            f" {self.cloud_macs_per_s / 1e6:g} MMAC/s, link {self.uplink_bytes_per_s / 1e3:g} KB/s up, RTT"
            f" {self.rtt_ms:g} ms{_per_request(self.request_overhead_ms)}"
        )


LINK_FIELDS = ("uplink_bytes_per_s", "downlink_bytes_per_s", "rtt_ms", "count_result_return", "request_overhead_ms")


def link_fields(model: LatencyModel) -> dict:
    """The link a latency model prices with, by LINK_FIELDS (None where it has no such term)."""
    if isinstance(model, FastestRuntime):
        return model.link
    return {k: getattr(model, k, None) for k in LINK_FIELDS}


class _Link(Protocol):
    """What pricing the link needs from a latency model (read-only: the models are frozen dataclasses)."""

    @property
    def uplink_bytes_per_s(self) -> float: ...
    @property
    def downlink_bytes_per_s(self) -> float: ...
    @property
    def rtt_ms(self) -> float: ...
    @property
    def count_result_return(self) -> bool: ...
    @property
    def request_overhead_ms(self) -> float: ...


def _link_terms(link: _Link, shape: PlanShape, offloads: bool) -> dict[str, float]:
    """The link's share of a plan's latency, the same whoever prices the compute: the cut tensor up
    (bytes / B + RTT + the per-request overhead), the result down where the model counts it."""
    if not offloads:
        return {"transfer_ms": 0.0, "return_ms": 0.0}
    return {
        "transfer_ms": transfer_ms(shape.cut_bytes, link.uplink_bytes_per_s, link.rtt_ms + link.request_overhead_ms),
        "return_ms": transfer_ms(shape.result_bytes, link.downlink_bytes_per_s) if link.count_result_return else 0.0,
    }


def _per_request(ms: float) -> str:
    return f" + {ms:.2f} ms per request" if ms > 0 else ""


def _lerp(xs: list[float], ys: list[float], x: float) -> float:
    """Piecewise-linear through (xs, ys) (xs sorted), extrapolated linearly at both ends, never below 0.

    Points at the same x (a coupled layer whose grid keeps round to one channel count) are averaged into one.
    """
    if len(set(xs)) < len(xs):
        by: dict[float, list[float]] = {}
        for xi, yi in zip(xs, ys):
            by.setdefault(xi, []).append(yi)
        xs, ys = sorted(by), [sum(by[k]) / len(by[k]) for k in sorted(by)]
    if len(xs) == 1:
        return ys[0]
    i = 1
    while i < len(xs) - 1 and x > xs[i]:
        i += 1
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return max(0.0, y0 + (y1 - y0) * (x - x0) / (x1 - x0))


def interpolate_layer(points: Sequence[LayerPoint], in_keep: float, out_keep: float, stat: str = "ms") -> float:
    """Latency (ms) of one layer at (in_keep, out_keep) from its measured grid.

    Bilinear on a full (in, out) grid; linear along the one axis that varies
    otherwise (a depthwise conv's in == out, the first layer's input and the
    classifier's output never change).
    """
    ins = sorted({p.in_keep for p in points})
    outs = sorted({p.out_keep for p in points})
    val = {(p.in_keep, p.out_keep): _stat(p, stat) for p in points}
    if len(ins) > 1 and len(outs) > 1 and len(val) == len(ins) * len(outs):
        col = [_lerp(outs, [val[(i, o)] for o in outs], out_keep) for i in ins]
        return _lerp(ins, col, in_keep)
    if len(outs) == 1:
        return _lerp(ins, [val[(i, outs[0])] for i in ins], in_keep)
    if len(ins) == 1:
        return _lerp(outs, [val[(ins[0], o)] for o in outs], out_keep)
    diag = sorted(points, key=lambda p: p.out_keep)  # coupled in == out
    return _lerp([p.out_keep for p in diag], [_stat(p, stat) for p in diag], out_keep)


def _stat(p: LayerPoint, stat: str) -> float:
    """A point's timing statistic, or its ``io_bytes`` (interpolated the same way)."""
    return float(p.io_bytes) if stat == "io_bytes" else p.stat(stat)


def whole_timings(table: ModelTable, side: str, stat: str = "ms") -> dict[tuple[int, float], float]:
    """(cut, keep) -> ms of the whole heads (``side`` "heads", pruned ones included) or tails, made monotone.

    A head at cut p computes a prefix of the head at p + 1 (the same keep),
    and a head pruned to keep k a subset of one at a larger keep; a tail at p
    contains the tail at p + 1. So each timing is also bounded by every
    larger model's, and since a slow spell only ever adds time, each is
    replaced by the least of those bounds. Seen on the emulated Pi: MobileNet's
    unpruned head at cut 27 timed 9.86 ms, the whole model 7.36 ms.
    """
    rows = [(w.cut, 1.0, w.stat(stat)) for w in (table.heads if side == "heads" else table.tails) if w.stat(stat)]
    if side == "heads":
        rows += [(w.cut, float(w.keep), w.stat(stat)) for w in table.pruned_heads if w.stat(stat)]
    t = {(c, k): ms for c, k, ms in rows}
    later = (lambda c: -c) if side == "heads" else (lambda c: c)  # the larger model comes first
    for k in {k for _, k in t}:
        best = float("inf")
        for c in sorted((c for c, kk in t if kk == k), key=later):
            best = t[(c, k)] = min(t[(c, k)], best)
    for c in {c for c, _ in t}:
        best = float("inf")
        for k in sorted((k for cc, k in t if cc == c), reverse=True):
            best = t[(c, k)] = min(t[(c, k)], best)
    return t


def anchored(table_ms: float, points: list[tuple[float, float]]) -> float:
    """A plan's table sum mapped onto measured whole models: ``points`` are (table sum, measured ms) pairs.

    Between two points, linear in the table sum (a plan the tables put halfway
    between two timed heads is predicted halfway between their times); outside
    them, the table sum scaled by the nearest point's measured / table ratio.
    One point (the unpruned head) is the plain ratio.
    """
    pts = sorted(p for p in points if p[0] > 0)
    if not pts:
        return table_ms
    if table_ms <= pts[0][0]:
        return table_ms * pts[0][1] / pts[0][0]
    if table_ms >= pts[-1][0]:
        return table_ms * pts[-1][1] / pts[-1][0]
    (x0, y0), (x1, y1) = next((a, b) for a, b in zip(pts, pts[1:]) if a[0] <= table_ms <= b[0])
    return y0 + (y1 - y0) * (table_ms - x0) / (x1 - x0) if x1 > x0 else y0


COLD_STAT = "cold_median_ms"  # a whole model's median run after idle (profiling.COLD_GAP_MS), as a served request
BLOCKED_KINDS = ("conv", "dwconv")  # ONNX Runtime's blocked (NCHWc) layout covers convolutions, not the classifier


def blocked_keep(keep: float, channels: int, block: int) -> float:
    """The kept fraction a convolution costs on a host that computes channels in blocks of ``block``.

    ONNX Runtime's CPU convolutions run in a blocked channel layout (NCHWc)
    where the CPU has one; a partial block costs a whole one. Measured on this
    host (AVX-512, block 16): a 3x3 conv, 64 -> 56 output channels at 32x32,
    took 0.677 ms against 0.673 ms for 64 and 0.507 ms for 48; a depthwise
    one, 56 channels, the same as 64. The tables are measured at grid
    fractions (whole blocks), so interpolating between them at 56 would
    predict ~13 % too little for that layer.
    """
    if channels <= 0 or block <= 1:
        return keep
    kept = max(1, round(keep * channels))
    return min(channels, math.ceil(kept / block) * block) / channels


def misaligned_factor(row: LayerRow, overhead_ms: float, stat: str = "ms") -> float:
    """How much slower a layer's table row says it runs off the fast channel layout: its ``misaligned``
    timing (one channel fewer than it has) over its unpruned one, each less the run overhead; at least 1."""
    full = next((p for p in row.points if p.in_keep == 1.0 and p.out_keep == 1.0), None)
    mis = row.misaligned
    if full is None or mis is None or full.stat(stat) <= overhead_ms:
        return 1.0
    return max(1.0, (mis.stat(stat) - overhead_ms) / (full.stat(stat) - overhead_ms))


@dataclass(frozen=True)
class SideTable:
    """One host's table for one model, and the price of one of its layers run inside a model.

    Each layer was timed as its own ONNX Runtime run: that run's cost comes
    off each, the fixed part and the part that grows with the bytes copied
    in and out (measured with the same statistic; older profiles hold only
    the fixed part, or only the sustained one).
    """

    table: ModelTable
    stat: str

    @classmethod
    def of(cls, tables: dict[str, ModelTable], host: str, model: str, stat: str) -> SideTable:
        if model not in tables:
            name, _, runtime = model.partition("@")
            how = f" --runtime {runtime}" if runtime else ""
            raise CpcdrlError(
                f"profile {host!r} has no table for {model}; run: cpcdrl profile --host {host} --model {name}{how}"
            )
        return cls(tables[model], stat)

    @property
    def overhead_ms(self) -> float:
        return self.table.overhead(self.stat)

    def alone(self, i: int, in_keep: float, out_keep: float) -> float:
        """Layer ``i`` at these keep ratios, less its run's overhead; blocked and misaligned channel counts priced as
        measured."""
        t, ov = self.table, self.overhead_ms
        per_byte = t.run_overhead_per_io_byte.get(self.stat, 0.0)  # a statistic the profile did not time: none
        block, dw_align = t.channel_block, t.dw_alignment
        row = t.layers[i - 1]
        pts = row.points
        # a depthwise conv off its fast path (a channel count that is not a multiple of the host's
        # dw_alignment): its interpolated time x its own measured slowdown there (misaligned_factor)
        slow = dw_align > 1 and row.misaligned is not None and round(out_keep * row.out_channels) % dw_align != 0
        if block > 1 and row.kind in BLOCKED_KINDS:
            in_keep = blocked_keep(in_keep, row.in_channels, block)
            out_keep = blocked_keep(out_keep, row.out_channels, block)
        io = interpolate_layer(pts, in_keep, out_keep, "io_bytes") if per_byte else 0.0
        ms = max(0.0, interpolate_layer(pts, in_keep, out_keep, self.stat) - ov - per_byte * io)
        return ms * misaligned_factor(row, ov, self.stat) if slow else ms

    def total(self, layers: range, in_keep: Sequence[float], out_keep: Sequence[float]) -> float:
        """The layers' times each less its run overhead, plus the fixed part of that overhead once; a unit of several
        layers timed whole (``segments``) priced by ``segment_ms``."""
        whole = [g for g in self.table.segments if g.first in layers and g.last in layers]
        inside = {i for g in whole for i in range(g.first, g.last + 1)}
        plain = sum(self.alone(i, in_keep[i - 1], out_keep[i - 1]) for i in layers if i not in inside)
        return self.overhead_ms + plain + sum(segment_ms(self, g, in_keep, out_keep) for g in whole)

    def whole_stat(self, side: str, cold: bool) -> str:
        """The statistic of the whole timings to anchor to: the as-served one where wanted and every whole model has
        it."""
        whole = self.table.whole(side)
        return COLD_STAT if cold and whole and all(w.cold_median_ms for w in whole) else self.stat

    def anchor_points(self, side: str, cut: int, layers: range, whole_stat: str) -> list[tuple[float, float]]:
        """(table sum, measured) of every whole model timed at ``cut``: the unpruned one, and on the
        edge side the same head pruned uniformly to each grid keep (newer profiles); none untimed."""
        timed = whole_timings(self.table, side, whole_stat)
        if not timed.get((cut, 1.0)):
            return []
        n = max(layers, default=0)
        points = [(self.total(layers, [1.0] * n, [1.0] * n), timed[(cut, 1.0)])]
        for h in self.table.pruned_heads if side == "heads" else []:
            if h.cut == cut and timed.get((h.cut, h.keep)):
                points.append((self.total(layers, h.in_keep, h.out_keep), timed[(h.cut, h.keep)]))
        return points


def segment_ms(side: SideTable, seg: SegmentRow, in_keep: Sequence[float], out_keep: Sequence[float]) -> float:
    """A residual block at a plan's keeps, less its run's overhead, from the block timed whole at the grid's keeps.

    The layers alone leave out what the block adds between them (its add,
    batch norms, activations) and the caches they share; the block's own
    timings hold both. Between the timed keeps the block's time is linear in
    its work: each layer's unpruned time alone x the fraction of its MACs
    kept (``anchored`` over that sum). Not the layers' interpolated tables:
    where a pruned channel count rounds up to a whole block
    (``blocked_keep``) they price two timed keeps the same, and on the
    emulated Pi ResNet-20's first block ran in 0.76 ms at half its channels
    against 1.33 ms whole.
    """
    span = range(seg.first, seg.last + 1)
    full = [side.alone(i, 1.0, 1.0) for i in span]
    dw = [side.table.layers[i - 1].kind == "dwconv" for i in span]

    def work(ins: Sequence[float], outs: Sequence[float]) -> float:
        return sum(f * (o if d else i * o) for f, d, i, o in zip(full, dw, ins, outs, strict=True))

    per_byte = side.table.run_overhead_per_io_byte.get(side.stat, 0.0)
    points = [
        (work(p.in_keep, p.out_keep), max(0.0, p.stat(side.stat) - side.overhead_ms - per_byte * p.io_bytes))
        for p in seg.points
    ]
    return anchored(work([in_keep[i - 1] for i in span], [out_keep[i - 1] for i in span]), points)


@dataclass(frozen=True)
class TableLatencyModel:
    """Latency from per-layer tables measured on each host (``cpcdrl profile``).

    With ``anchor`` (the default) each side is tied to whole models timed at
    the plan's cut, since inside one model the layers share caches and one
    run's overhead (docs/measuring.md has the measured gaps): an unpruned
    plan is its own measured head (tail); a pruned head sits between the
    uniformly pruned heads the profile timed, by its table sum
    (``anchored``). ``anchor=False`` (what ``compare`` checks) and profiles
    without whole timings use the plain sums. Blocked channel counts and
    misaligned depthwise convs are priced as measured (``SideTable.alone``);
    with ``cold``, a side that waits for the rest of each request is
    anchored to the whole models timed after idle.
    """

    edge_tables: dict[str, ModelTable]  # by profile.table_key
    cloud_tables: dict[str, ModelTable]
    uplink_bytes_per_s: float
    downlink_bytes_per_s: float
    rtt_ms: float = 0.0
    count_result_return: bool = False
    edge_name: str = "edge"  # profile names, for messages
    cloud_name: str = "cloud"
    # "ms": each entry's sustained mean (what a throttled CPU allows over time, the
    # optimiser's default); "median_ms": the per-run median, which is what a
    # single request sees when it fits in one quota window (deploy reports both)
    stat: str = "ms"
    anchor: bool = True
    edge_runtime: str = "onnxruntime"  # whose edge tables (profiles.table_key): the head's runtime on the device
    request_overhead_ms: float = 0.0  # per request, beyond bytes / B + RTT (profiles.LinkProfile)
    # anchor to the whole models as a served request finds them (their "cold_median_ms": timed after
    # idle) where the side waits for the rest of the request: the cloud always, the edge when the plan
    # offloads; an all-on-edge plan runs back to back. Profiles without those timings: unchanged
    cold: bool = True
    # (side, model, cut, statistic) -> the whole models' (table sum, measured) points; per instance, so that
    # dataclasses.replace (another stat, other tables) starts empty
    _anchor_points: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _sum(
        self,
        tables: dict[str, ModelTable],
        host: str,
        model: str,
        shape: PlanShape,
        layers: range,
        whole: tuple[str, int] | None = None,
        cold: bool = False,
    ) -> float:
        """The plan's table sum on one side (``SideTable.total``), anchored to the whole models timed at its cut.

        ``whole``: ("heads", cut) or ("tails", cut), the whole-model timing to anchor the sum to;
        ``cold``: this side idles between requests (``TableLatencyModel.cold``).
        """
        side = SideTable.of(tables, host, model, self.stat)
        plan = side.total(layers, shape.in_keep, shape.out_keep)
        if not (self.anchor and whole):
            return plan
        whole_stat = side.whole_stat(whole[0], cold and self.cold)
        key = (whole[0], model, whole[1], whole_stat)
        if key not in self._anchor_points:  # they depend on the tables and the cut, not on the plan: once each
            self._anchor_points[key] = side.anchor_points(whole[0], whole[1], layers, whole_stat)
        return anchored(plan, self._anchor_points[key])

    def predict(self, model: str, shape: PlanShape) -> LatencyBreakdown:
        n = len(shape.layer_macs)
        offloads = shape.cut < n
        edge, cloud = range(1, shape.cut + 1), range(shape.cut + 1, n + 1)
        edge_key = table_key(model, self.edge_runtime)
        return LatencyBreakdown(
            edge_ms=self._sum(self.edge_tables, self.edge_name, edge_key, shape, edge, ("heads", shape.cut), offloads)
            if shape.cut
            else 0.0,
            cloud_ms=self._sum(self.cloud_tables, self.cloud_name, model, shape, cloud, ("tails", shape.cut), True)
            if offloads
            else 0.0,
            **_link_terms(self, shape, offloads),
        )

    def describe(self) -> str:
        return _describe_tables(self)


def _describe_tables(m: TableLatencyModel) -> str:
    tabs = (*m.edge_tables.values(), *m.cloud_tables.values())
    served = m.cold and any(w.cold_median_ms is not None for tab in tabs for w in [*tab.tails, *tab.heads])
    kind = ("per-run medians" if m.stat == "median_ms" else "sustained means") + (
        (", anchored to whole heads/tails" + (" as served (timed after idle)" if served else ""))
        if m.anchor
        else ", plain sums"
    )
    rt = f" ({m.edge_runtime})" if m.edge_runtime != "onnxruntime" else ""
    link = f"B={m.uplink_bytes_per_s / 1e3:.1f} KB/s up, RTT {m.rtt_ms:.1f} ms{_per_request(m.request_overhead_ms)}"
    return f"measured tables ({kind}): edge {m.edge_name}{rt}, cloud {m.cloud_name}, {link}"


@dataclass(frozen=True)
class FastestRuntime:
    """One latency model per edge runtime; a plan is priced with the runtime that runs its head fastest."""

    by_runtime: dict  # runtime name -> LatencyModel

    def __post_init__(self) -> None:
        links = {tuple(link_fields(m).values()) for m in self.by_runtime.values()}
        if (
            len(links) != 1
        ):  # the runtimes differ in the head only: a plan's transfer must not depend on which one runs it
            raise ValueError(f"the runtimes' latency models price different links: {sorted(links)}")

    @property
    def link(self) -> dict:
        """The link every runtime's model prices with (LINK_FIELDS)."""
        return link_fields(next(iter(self.by_runtime.values())))

    def runtime_for(self, model: str, shape: PlanShape) -> str:
        if shape.cut == 0:  # nothing runs on the device
            return next(iter(self.by_runtime))
        return min(self.by_runtime, key=lambda r: self.by_runtime[r].predict(model, shape).total_ms)

    def predict(self, model: str, shape: PlanShape) -> LatencyBreakdown:
        return self.by_runtime[self.runtime_for(model, shape)].predict(model, shape)

    def describe(self) -> str:
        first = next(iter(self.by_runtime.values())).describe()
        return f"{first}; each plan's head in the faster of {' and '.join(self.by_runtime)}"


def edge_runtimes(edge: Profile, model: str) -> list[str]:
    """The edge runtimes ``edge`` has tables for (ONNX Runtime first); an analytic profile prices none apart."""
    if edge.kind != "measured":
        return ["onnxruntime"]
    # read from the table keys (profile.table_key): whatever runtimes the profiler timed, no list to keep here
    others = sorted(k.partition("@")[2] for k in edge.tables if k.startswith(f"{model}@"))
    return (["onnxruntime"] if model in edge.tables else []) + others


def build_latency_model(
    edge: Profile, cloud: Profile, link: LinkProfile | None = None, edge_runtime: str = "onnxruntime"
) -> LatencyModel:
    """The latency model the profiles call for: analytic if both are, else measured tables.

    The link comes from ``link``, else the edge profile's, else the cloud
    profile's. ``edge_runtime`` picks the edge tables of one runtime.
    """
    link = link or edge.link or cloud.link
    if link is None:
        raise CpcdrlError(f"no link given: neither {edge.name!r} nor {cloud.name!r} holds one; pass --link")
    if edge.kind == "analytic" and cloud.kind == "analytic":
        return AnalyticLatencyModel.over(
            edge.compute_rate("edge").macs_per_s, cloud.compute_rate("cloud").macs_per_s, link
        )
    if edge.kind == "measured" and cloud.kind == "measured":
        return TableLatencyModel(
            edge.tables,
            cloud.tables,
            link.uplink_bytes_per_s,
            link.downlink_bytes_per_s,
            link.rtt_ms,
            link.count_result_return,
            edge.name,
            cloud.name,
            edge_runtime=edge_runtime,
            request_overhead_ms=link.request_overhead_ms,
        )
    raise CpcdrlError(
        f"cannot mix an analytic and a measured profile ({edge.name!r} is {edge.kind}, {cloud.name!r} is {cloud.kind})"
    )
