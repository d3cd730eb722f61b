"""A plan set: one plan per bandwidth band, so a deployed model can follow its link (``optimize --bandwidth-range``).

A Pi on Wi-Fi or LTE does not keep one bandwidth, and the best split moves
with it: all on the device when the uplink crawls, an early cut or all on the
cloud when it is fast. The set is searched once over a range: the method runs
at ``buckets`` bandwidths spread geometrically over it, every search sharing
one evaluator (so one accuracy per distinct pruned plan: the in-memory and
persistent caches answer repeats), and each distinct plan found becomes a
candidate.

Every candidate's predicted latency is ``fixed_ms + 1000 * link_bytes / b``
at uplink rate ``b`` (bytes/s): compute and round trips do not depend on the
rate, the bytes sent do. The chosen plan at ``b`` is the one lowest there,
among the candidates that keep their place on the envelope: a candidate
whose removal costs at most ``tolerance`` anywhere in the range is dropped
(fewer plans to ship and fewer switches for a few percent). Thresholds sit
where neighbouring bands' curves cross. A runner switches up only once its
estimate passes a threshold times ``1 + hysteresis`` and back down only
below the threshold over ``1 + hysteresis``, so an estimate that hovers near
a crossing, where both plans cost about the same, does not flap.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cpcdrl_deploy.core.artifact import Artifact, StrictPart
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.progress import Ticker, no_ticker
from cpcdrl_deploy.ondevice.adapt import band_at, switch_band
from cpcdrl_deploy.search.plan import Plan, load_plan

Log = Callable[[str], None]
GRID = 512  # bandwidths, log-spaced over the range, on which the envelope is found


@dataclass(frozen=True)
class Curve:
    """Predicted end-to-end latency of one plan against the uplink rate ``b`` (bytes/s)."""

    fixed_ms: float  # compute on both sides, round trips and per-request costs
    link_bytes: float  # bytes whose time scales with 1 / b (the cut tensor, and the result where the model counts it)

    def at(self, b: float | np.ndarray) -> float | np.ndarray:
        return self.fixed_ms + 1000.0 * self.link_bytes / b

    @classmethod
    def through(cls, lo: float, t_lo: float, hi: float, t_hi: float) -> Curve:
        """The curve through two priced points (exact for the latency models here: linear in 1 / b)."""
        c = (t_lo - t_hi) / (1000.0 / lo - 1000.0 / hi)
        return cls(t_lo - 1000.0 * c / lo, max(0.0, c))


def crossing(a: Curve, b: Curve) -> float | None:
    """The rate where two curves cost the same (None if they never cross at a positive rate)."""
    df, dc = b.fixed_ms - a.fixed_ms, a.link_bytes - b.link_bytes
    if dc == 0 or df == 0 or (dc > 0) != (df > 0):
        return None
    return 1000.0 * dc / df


def bucket_rates(lo: float, hi: float, buckets: int) -> list[float]:
    """The rates searched: the geometric centre of each of ``buckets`` equal log-width buckets of [lo, hi]."""
    if not 0 < lo < hi:
        raise CpcdrlError("--bandwidth-range LOW:HIGH needs 0 < LOW < HIGH")
    if buckets < 2:
        raise CpcdrlError("--buckets must be at least 2")
    edges = np.geomspace(lo, hi, buckets + 1)
    return [float(math.sqrt(a * b)) for a, b in zip(edges[:-1], edges[1:])]


def envelope(curves: dict[str, Curve], lo: float, hi: float, tolerance: float = 0.03) -> list[str]:
    """The candidates that stay on the lower envelope over [lo, hi], from the slowest link's plan to the fastest's.

    Greedy: drop the candidate whose removal raises the envelope least, while
    that rise stays within ``tolerance`` (relative) at every rate of the grid.
    """
    rates = np.geomspace(lo, hi, GRID)
    table = {k: np.asarray(c.at(rates)) for k, c in curves.items()}
    best = np.min(np.stack(list(table.values())), axis=0)
    keep = [k for k in table if np.any(table[k] <= best * (1 + 1e-12))]  # never lowest: never chosen
    while len(keep) > 1:
        costs = {}
        for k in keep:
            rest = np.min(np.stack([table[j] for j in keep if j != k]), axis=0)
            costs[k] = float(np.max(rest / best - 1.0))
        k, cost = min(costs.items(), key=lambda kv: kv[1])
        if cost > tolerance:
            break
        keep.remove(k)
    order = np.argmin(np.stack([table[k] for k in keep]), axis=0)
    return list(dict.fromkeys(keep[i] for i in order))  # by first rate where each is lowest: slow link first


class SetMember(StrictPart):
    name: str  # the plan's name in the set (model names of its served tail, log lines)
    plan: str  # its plan file, beside the set's
    cut: int
    n_layers: int
    fixed_ms: float
    link_bytes: float
    test_accuracy: float | None = None
    meets_a0_on_test: bool | None = None

    def curve(self) -> Curve:
        return Curve(self.fixed_ms, self.link_bytes)


class SetBand(StrictPart):
    plan: str  # a member's name
    low_bytes_per_s: float | None  # None: from no link at all
    high_bytes_per_s: float | None  # None: to any rate


class PlanSet(Artifact):
    """Plans for a bandwidth range, the band each serves, and the switching rule (``switch``)."""

    KIND = "cpcdrl-planset"
    REMAKE = "cpcdrl optimize MODEL ... --bandwidth-range LOW:HIGH --out plans.json"

    model: str
    method: str
    range_bytes_per_s: tuple[float, float]
    searched_bytes_per_s: list[float]
    hysteresis: float
    tolerance: float
    a0_test: float
    latency_model: str
    members: list[SetMember]
    bands: list[SetBand]
    wall_s: float = 0.0

    def member(self, name: str) -> SetMember:
        for m in self.members:
            if m.name == name:
                return m
        raise CpcdrlError(f"the plan set has no plan {name!r}")

    def highs(self) -> list[float | None]:
        return [b.high_bytes_per_s for b in self.bands]

    def band_at(self, rate: float) -> int:
        """The band whose plan is lowest at ``rate`` (no hysteresis: where a runner starts)."""
        return band_at(self.highs(), rate)

    def switch(self, band: int, estimate: float) -> int:
        """The band a runner in ``band`` should be in at an uplink ``estimate``: it moves only past the hysteresis."""
        return switch_band(self.highs(), band, estimate, self.hysteresis)

    def predicted_ms(self, rate: float) -> dict[str, float]:
        return {m.name: float(m.curve().at(rate)) for m in self.members}


def make_bands(curves: dict[str, Curve], order: Sequence[str]) -> list[SetBand]:
    """Bands in ``order`` (slow link first), their edges where neighbouring curves cross."""
    edges: list[float | None] = [None]
    for a, b in zip(order[:-1], order[1:]):
        x = crossing(curves[a], curves[b])
        if x is None:  # neighbours on the envelope cross; guard a degenerate pair of equal curves
            raise CpcdrlError(f"plans {a} and {b} never cross: cannot place a threshold between them")
        edges.append(x)
    edges.append(None)
    return [SetBand(plan=k, low_bytes_per_s=edges[i], high_bytes_per_s=edges[i + 1]) for i, k in enumerate(order)]


@dataclass
class SetRequest:
    low: float  # bytes/s
    high: float
    buckets: int = 4
    hysteresis: float = 0.2
    tolerance: float = 0.03
    # the searches' proposals together, in units of one optimize run's --episodes: each bucket gets its share, and
    # every plan any of them scored competes at every rate
    budget: float = 1.25


# the methods a set is searched with: those that choose among cuts (a fixed cut is one plan at every rate)
SET_METHODS = ("cpcdrl", "cpcdrl-paper", "neurosurgeon", "greedy", "random")


def optimize_set(req, sreq: SetRequest, log: Log = lambda s: None, tick: Ticker = no_ticker):
    """Search the plan set for ``req`` (an ``OptimizeRequest`` of one method) over ``sreq``'s range.

    Returns (the set, {member name: its Plan}, {member name: its pruned model}).
    """
    import time

    from cpcdrl_deploy.search.optimize import _search_all, constraint_loss, prepare, set_link_rate

    _check_set(req, sreq)
    rates = bucket_rates(sreq.low, sreq.high, sreq.buckets)
    t0 = time.perf_counter()
    session = prepare(req, log, tick)
    loss = constraint_loss(session, req.accuracy, req.max_accuracy_loss)
    a0_val = session.base_val - loss
    search = dataclasses.replace(req.search, episodes=max(1, math.ceil(req.search.episodes * sreq.budget / len(rates))))
    for k, rate in enumerate(rates):
        log(f"[{k + 1}/{len(rates)}] searching at {_rate(rate)}, {search.episodes} proposals")
        bucket = set_link_rate(session, rate, log)
        bucket = dataclasses.replace(bucket, req=dataclasses.replace(bucket.req, search=search))
        bucket.evaluator.a0 = a0_val
        if _search_all(bucket, a0_val, log, tick, t0)[1]:
            raise KeyboardInterrupt
    pool = feasible_pool(session, a0_val)
    if not pool:
        raise CpcdrlError(f"no plan the searches scored keeps accuracy >= {session.base_test - loss:.2f} %")
    curves = _price_candidates(session, pool, sreq, log)
    kept = envelope({str(i): c for i, c in enumerate(curves)}, sreq.low, sreq.high, sreq.tolerance)
    order = [f"b{i}" for i in range(len(kept))]  # named by band, slow link first
    bands = make_bands({n: curves[int(k)] for n, k in zip(order, kept)}, order)
    members, plans, models = [], {}, {}
    for name, kk, band in zip(order, kept, bands):
        ev, c = pool[int(kk)], curves[int(kk)]
        plan, model = _member_plan(session, ev, band, sreq, loss, a0_val, t0)
        members.append(
            SetMember(
                name=name,
                plan="",  # set when written (write_set)
                cut=plan.cut,
                n_layers=plan.n_layers,
                fixed_ms=c.fixed_ms,
                link_bytes=c.link_bytes,
                test_accuracy=plan.accuracy.test,
                meets_a0_on_test=plan.accuracy.meets_a0_on_test,
            )
        )
        plans[name], models[name] = plan, model
    log(f"{len(pool)} plans meet the constraint on validation; {len(order)} stay on the envelope")
    planset = PlanSet(
        model=req.model,
        method=req.methods[0],
        range_bytes_per_s=(sreq.low, sreq.high),
        searched_bytes_per_s=rates,
        hysteresis=sreq.hysteresis,
        tolerance=sreq.tolerance,
        a0_test=session.base_test - loss,
        latency_model=session.latency_desc,
        members=members,
        bands=bands,
        wall_s=time.perf_counter() - t0,
    )
    return planset, plans, models


def _check_set(req, sreq: SetRequest) -> None:
    if len(req.methods) != 1 or req.methods[0] not in SET_METHODS:
        raise CpcdrlError(f"--bandwidth-range searches with one --method of {', '.join(SET_METHODS)}")
    if req.bandwidth_bytes_per_s is not None:
        raise CpcdrlError("give --bandwidth or --bandwidth-range, not both")
    if not 0.0 <= sreq.hysteresis < 1.0 or not 0.0 <= sreq.tolerance < 1.0:
        raise CpcdrlError("--hysteresis and --tolerance must be in [0, 1)")
    if not sreq.budget > 0:
        raise CpcdrlError("the set's budget must be > 0")


def feasible_pool(session, a0_val: float) -> list:
    """Every plan the searches scored in full that meets A0 on validation by the method's margin, and every unpruned
    split (one accuracy for all): the candidates at every rate."""
    from cpcdrl_deploy.search.methods import margin_rule

    ev, cfg = session.evaluator, session.req.search
    if session.req.methods[0] == "cpcdrl-paper":
        cfg = cfg.paper()
    margin = margin_rule(cfg, a0_val, len(ev.val_y))
    unpruned = [ev.evaluate(c, [1.0] * c) for c in ev.analysis.cuttable_points()]
    pool = [e for e in unpruned if e.accuracy >= a0_val]
    pool += [e for e in ev.scored() if not (e.unpruned or e.screened) and e.accuracy - margin(e) >= a0_val]
    return pool


def _price_candidates(session, pool: list, sreq: SetRequest, log: Log) -> list[Curve]:
    """Each candidate's latency curve, from the latency model priced at both ends of the range."""
    from cpcdrl_deploy.search.optimize import set_link_rate

    ends = []
    for rate in (sreq.low, sreq.high):
        ev = set_link_rate(session, rate, log).evaluator
        ends.append([ev.price(e.cut, e.ratios)[1].total_ms for e in pool])
    return [Curve.through(sreq.low, a, sreq.high, b) for a, b in zip(*ends)]


def _member_plan(session, ev, band: SetBand, sreq: SetRequest, loss: float, a0_val: float, t0: float):
    """A member as a plan: priced at its band's middle rate (within the range), scored on the test images."""
    import time

    from cpcdrl_deploy.search.methods import SearchResult
    from cpcdrl_deploy.search.optimize import set_link_rate, test_and_record

    a, z = max(band.low_bytes_per_s or sreq.low, sreq.low), min(band.high_bytes_per_s or sreq.high, sreq.high)
    at = set_link_rate(session, math.sqrt(a * z))
    best = dataclasses.replace(ev, latency=at.evaluator.price(ev.cut, ev.ratios)[1])
    done = len(session.evaluator.scored())
    res = SearchResult(session.req.methods[0], best, done, wall_s=time.perf_counter() - t0)
    (plan,), models = test_and_record(at, [res], loss, a0_val)
    assert isinstance(plan, Plan)  # a best plan makes a feasible record
    return plan, models.get(res.method)


def write_set(path: str | Path, planset: PlanSet, plans: dict[str, Plan], models: dict) -> Path:
    """The set at ``path``, each member plan beside it as ``<stem>.<name>.json`` (with its weights); members first."""
    from cpcdrl_deploy.search.optimize import write_plan

    path = Path(path)
    members = []
    for m in planset.members:
        file = f"{path.stem}.{m.name}.json"
        write_plan(path.with_name(file), plans[m.name], models.get(m.name))
        members.append(m.model_copy(update={"plan": file}))
    return planset.model_copy(update={"members": members}).save(path)


def load_set(path: str | Path) -> tuple[PlanSet, dict[str, Plan]]:
    """A plan set and its member plans (each validated), or one error line."""
    path = Path(path)
    planset: PlanSet = PlanSet.load(path, "plan set")
    plans = {m.name: load_plan(path.with_name(m.plan)) for m in planset.members}
    if {b.plan for b in planset.bands} - set(plans):
        raise CpcdrlError(f"{path}: a band names a plan the set does not hold")
    return planset, plans


def is_plan_set(path: str | Path) -> bool:
    """Whether a JSON file is a plan set (commands that take a plan or a set look before loading)."""
    from cpcdrl_deploy.core.fileio import read_json

    try:
        d = read_json(Path(path))
    except (OSError, ValueError, EOFError, UnicodeDecodeError):
        return False
    return isinstance(d, dict) and d.get("kind") == PlanSet.KIND


def set_table(planset: PlanSet) -> str:
    """The bands as a table for people: where each plan takes over, its cut and its predicted latency there."""
    rows = ["| band (uplink) | plan | cut | predicted at the band's ends | test top-1 |", "|---|---|---|---|---|"]
    lo, hi = planset.range_bytes_per_s
    for b in planset.bands:
        m = planset.member(b.plan)
        a, z = max(b.low_bytes_per_s or lo, lo), min(b.high_bytes_per_s or hi, hi)
        span = f"{_rate(b.low_bytes_per_s)} - {_rate(b.high_bytes_per_s)}"
        acc = f"{m.test_accuracy:.2f} %" if m.test_accuracy is not None else "-"
        where = "all on the cloud" if m.cut == 0 else "all on the edge" if m.cut == m.n_layers else f"{m.cut}"
        rows.append(f"| {span} | {m.name} | {where} | {m.curve().at(a):.1f} - {m.curve().at(z):.1f} ms | {acc} |")
    return "\n".join(rows)


def _rate(b: float | None) -> str:
    if b is None:
        return "..."
    return f"{b / 1e6:.2f} MB/s" if b >= 1e6 else f"{b / 1e3:.0f} KB/s"


def plot_set(planset: PlanSet, path: str | Path) -> None:
    """Predicted latency against uplink rate: every member's curve, the chosen envelope, thresholds and hysteresis."""
    from cpcdrl_deploy.core.plotting import plt, save_figure

    lo, hi = planset.range_bytes_per_s
    rates = np.geomspace(lo, hi, GRID)
    fig, ax = plt.subplots(figsize=(7, 4))
    for m in planset.members:
        ax.plot(rates / 1e3, m.curve().at(rates), lw=1, alpha=0.6, label=f"{m.name} (cut {m.cut})")
    env = [float(planset.member(planset.bands[planset.band_at(r)].plan).curve().at(r)) for r in rates]
    ax.plot(rates / 1e3, env, color="black", lw=2.5, alpha=0.5, label="chosen")
    h = 1.0 + planset.hysteresis
    for b in planset.bands[1:]:
        x = b.low_bytes_per_s or lo
        ax.axvline(x / 1e3, color="grey", ls=":", lw=1)
        ax.axvspan(x / h / 1e3, x * h / 1e3, color="grey", alpha=0.12)
    ax.set(xscale="log", yscale="log", xlabel="uplink (KB/s)", ylabel="predicted latency (ms)")
    ax.set_title(f"{planset.model}: plan set over {_rate(lo)} - {_rate(hi)}", fontsize=10)
    ax.legend(fontsize=8)
    save_figure(fig, path)
