"""``cpcdrl deploy plans.json --adaptive --trace trace.csv``: a plan set following the link, against each of its
plans held fixed, under the same link trace on the testbed.

Every plan of the set is exported, every head uploaded and every tail served
by one server (a switch is another model name in the request: nothing loads
at switch time). The edge runner then runs ``--adaptive`` (``run_adaptive``:
it estimates the uplink from its own requests and switches bands) while this
host replays the trace on the testbed's shaped link, and again once per plan
with that plan alone, under the same trace replayed from its start. Runner and
trace start together at an agreed wall-clock time, after the runner's
warm-up, so each request falls in the trace phase it ran in.

Per trace phase and overall: p50/p90 of the adaptive run, of every static
plan and of the oracle (the best static plan's p50 in each phase); the
switch delay (from a rate change to the first request by the band the set
prescribes at the new rate); the runner's estimate against the shaped rate;
failed requests; and every answer checked against the pruned PyTorch model.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.fileio import atomic_write_json
from cpcdrl_deploy.core.progress import Ticker, no_ticker
from cpcdrl_deploy.devices.linktrace import TracePoint, read_trace, replay
from cpcdrl_deploy.devices.remote import connect
from cpcdrl_deploy.devices.testbed import running, set_rate
from cpcdrl_deploy.measure.profile import load_profile
from cpcdrl_deploy.search.planset import PlanSet, load_set
from cpcdrl_deploy.serving.session import plans_on_device, run_edge_runner, server_address

Log = Callable[[str], None]
MIN_PHASE_S = 10.0  # phases at least this long are judged on their own (shorter ones count overall only)


@dataclass
class AdaptiveRequest:
    planset: Path
    trace: Path
    seconds: float
    edge: str = "pi"
    out: Path = Path("adaptive")
    images: int = 64
    statics: bool = True  # also run each plan of the set alone under the same trace
    probe_every_s: float = 1.0
    lead_s: float | None = None  # runner start-up before the trace starts (default: 5 s + 2 s per plan)
    timeout_s: float = 10.0
    bind: str | None = None
    trust_host_key: bool = False
    seed: int = 0


def deploy_adaptive(req: AdaptiveRequest, log: Log = lambda s: None, tick: Ticker = no_ticker) -> dict:
    """Run the set adaptively and each plan statically under the trace; write ``out/adaptive-report.json`` and
    ``out/adaptive.png``; the report."""
    from cpcdrl_deploy.deploy.bench import BenchRequest, export_all, interleaved_plan

    planset, plans = load_set(req.planset)
    points = read_trace(req.trace)
    if not req.seconds > 0:
        raise CpcdrlError("--seconds must be > 0")
    state = running(req.edge)  # a trace needs the testbed's shaped link
    names = [m.name for m in planset.members]
    paths = [req.planset.with_name(m.plan) for m in planset.members]
    breq = BenchRequest(paths, edge=req.edge, out=req.out, images=req.images, seed=req.seed)
    entries, failed, given = export_all(breq, [plans[n] for n in names], Path(req.out), log, tick)
    if failed:
        raise CpcdrlError(f"plans that did not export: {failed}")
    ids = {e["id"]: n for e, n in zip(entries, names)}  # p<i> -> the member's name
    inputs = given.save(Path(req.out) / "inputs.npy")
    edge_profile = plans[names[0]].profiles.edge
    if edge_profile and not Path(edge_profile).is_absolute() and (req.planset.parent / edge_profile).exists():
        edge_profile = str(req.planset.parent / edge_profile)  # named as optimize was given it, beside the set
    link = load_profile(edge_profile).link if edge_profile else None
    base_ms = link.per_request_ms if link is not None else 0.0
    dev = connect(req.edge, trust_host_key=req.trust_host_key)
    runs: dict[str, dict] = {}
    try:
        spec = [interleaved_plan(e, Path(req.out) / "exports" / e["id"]) for e in entries]
        with plans_on_device(dev, server_address(req.edge, req.bind), spec, inputs, log, close=False) as up:
            by_name = {ids[p["id"]]: p for p in up.spec}
            which = ["adaptive"] + (names if req.statics else [])
            for k, run in enumerate(which):
                tick("trace runs", k, len(which))
                bands = planset.bands if run == "adaptive" else [b for b in planset.bands if b.plan == run][:1]
                rspec: dict = {
                    "plans": [by_name[b.plan] for b in bands],
                    "bands": [{"plan": by_name[b.plan]["id"], "high": b.high_bytes_per_s} for b in bands],
                    "hysteresis": planset.hysteresis,
                    "base_ms": base_ms,
                    "start_bytes_per_s": points[0].bytes_per_s,
                }
                if run != "adaptive":
                    rspec["bands"][0]["high"] = None
                log(f"{run}: {req.seconds:g} s under {req.trace}")
                runs[run] = _one_run(req, dev, up, rspec, points, len(spec), state.bandwidth_bytes_per_s)
            tick("trace runs", len(which), len(which))
    finally:
        set_rate(req.edge, state.bandwidth_bytes_per_s)  # the link as it was before the traces
        dev.close()
    want = {e["id"]: e["want"] for e in entries}
    report = analyse(planset, runs, points, req.seconds, want, ids)
    report.update(planset=str(req.planset), trace=str(req.trace), edge=req.edge, base_ms=base_ms)
    atomic_write_json(Path(req.out) / "adaptive-report.json", report)
    try:
        plot_adaptive(report, runs, Path(req.out) / "adaptive.png")
    except Exception as exc:  # noqa: BLE001 - a missing plot must not lose the measurements
        log(f"no plot: {exc}")
    return report


def _one_run(
    req: AdaptiveRequest, dev, up, rspec: dict, points: list[TracePoint], n_plans: int, after_rate: float
) -> dict:
    """One runner run under the trace: both start at the same wall-clock time (after the runner's warm-up); the link
    goes back to ``after_rate`` when the requests end, before the runner's report comes back over it."""
    lead = req.lead_s if req.lead_s is not None else 5.0 + 2.0 * n_plans
    set_rate(req.edge, points[0].bytes_per_s)
    start_at = time.time() + lead
    applied: list[dict] = []
    stop = threading.Event()

    def trace() -> None:
        stop.wait(max(0.0, start_at - time.time()))
        if not stop.is_set():
            todo = [p for p in points if p.time_s < req.seconds]

            def apply(rate: float) -> None:
                if not stop.is_set():
                    set_rate(req.edge, rate)

            applied.extend(replay(todo, apply, clock=time.time, sleep=lambda s: None if stop.wait(s) else None))
        # a report of thousands of requests fetched at the trace's last rate (40 KB/s) took 25 s in a test
        stop.wait(max(0.0, start_at + req.seconds - time.time()))
        set_rate(req.edge, after_rate)

    thread = threading.Thread(target=trace, daemon=True)
    thread.start()
    args = [
        f"--adaptive {shlex.quote(up.put_json(dev, 'adaptive.json', rspec))}",
        *up.args(),
        f"--seconds {req.seconds:g}",
        f"--start-at {start_at:.3f}",
        f"--probe-every-s {req.probe_every_s:g}",
        f"--timeout {req.timeout_s:g}",
    ]
    try:
        rep = run_edge_runner(dev, up.remote_dir, args, up.token, budget_s=lead + req.seconds + 120.0)
    finally:
        stop.set()
        thread.join(10)
    rep["start_at"] = start_at
    rep["trace_applied"] = [{**a, "applied_at": start_at + a["applied_s"]} for a in applied]
    return rep


def phases(points: list[TracePoint], seconds: float) -> list[tuple[float, float, float]]:
    """(start s, end s, rate) of each trace phase within the run's ``seconds``."""
    out = []
    for i, p in enumerate(points):
        end = min(points[i + 1].time_s if i + 1 < len(points) else seconds, seconds)
        if p.time_s < end:
            out.append((p.time_s, end, p.bytes_per_s))
    return out


def _pcts(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p90": None, "n": 0}
    a = np.asarray(values)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "n": len(values)}


def analyse(
    planset: PlanSet, runs: dict[str, dict], points: list[TracePoint], seconds: float, want: dict, ids: dict
) -> dict:
    """The report: per phase and overall latency of every run and the oracle, switches and their delays, estimate
    errors, failures and agreement with PyTorch (pure: from the runners' records)."""
    ph = phases(points, seconds)

    def rel(run: dict) -> list[dict]:
        return [{**r, "t": r["t"] - run["start_at"]} for r in run["records"]]

    rows = []
    for a, z, rate in ph:
        row: dict = {"start_s": a, "end_s": z, "bytes_per_s": rate, "band": planset.bands[planset.band_at(rate)].plan}
        for name, run in runs.items():
            row[name] = _pcts([r["e2e_ms"] for r in rel(run) if a <= r["t"] < z and "e2e_ms" in r])
        statics = {n: row[n]["p50"] for n in runs if n != "adaptive" and row[n]["p50"] is not None}
        if statics:
            best = min(statics, key=lambda n: statics[n])
            row["oracle"] = {"plan": best, "p50": statics[best]}
            if row["adaptive"]["p50"] is not None:
                row["adaptive_over_oracle"] = row["adaptive"]["p50"] / statics[best]
        row["estimate_error"] = _estimate_error(rel(runs["adaptive"]), a, z, rate) if "adaptive" in runs else None
        rows.append(row)
    overall = {n: _pcts([r["e2e_ms"] for r in rel(run) if "e2e_ms" in r]) for n, run in runs.items()}
    checks = {n: _checks(run, want, ids) for n, run in runs.items()}
    adaptive = runs.get("adaptive")
    return {
        "kind": "cpcdrl-adaptive-report",
        "seconds": seconds,
        "phases": rows,
        "overall": overall,
        "checks": checks,
        "switches": [{**s, "t": s["t"] - adaptive["start_at"]} for s in adaptive["switches"]] if adaptive else [],
        "switch_delays": switch_delays(planset, rel(adaptive), ph) if adaptive else [],
        "bands": [b.model_dump() for b in planset.bands],
        "plans": dict(ids),
        "trace_applied": {n: run.get("trace_applied") for n, run in runs.items()},
        "aborted": {n: run["aborted"] for n, run in runs.items() if run.get("aborted")},
    }


def _estimate_error(recs: list[dict], a: float, z: float, rate: float) -> dict | None:
    """The estimate against the shaped rate over the phase's second half (after the estimator settles)."""
    est = [r["estimate_bytes_per_s"] for r in recs if (a + z) / 2 <= r["t"] < z and r.get("estimate_bytes_per_s")]
    if not est:
        return None
    return {"median_estimate_bytes_per_s": float(np.median(est)), "error": float(np.median(est)) / rate - 1.0}


def switch_delays(planset: PlanSet, recs: list[dict], ph: list[tuple[float, float, float]]) -> list[dict]:
    """For each rate change after which the set prescribes another band: the time to the first request in it."""
    out = []
    band = planset.band_at(ph[0][2]) if ph else 0
    for a, z, rate in ph[1:]:
        target = planset.switch(band, rate)
        if target != band:
            first = next((r["t"] for r in recs if r["t"] >= a and r["band"] == target and not r.get("probe")), None)
            out.append(
                {
                    "at_s": a,
                    "bytes_per_s": rate,
                    "from": planset.bands[band].plan,
                    "to": planset.bands[target].plan,
                    "delay_s": (first - a) if first is not None and first < z else None,
                }
            )
        band = target
    return out


def _checks(run: dict, want: dict, ids: dict) -> dict:
    """Requests sent, failed, and answered as the pruned PyTorch model answers (per plan's expected predictions)."""
    recs = run["records"]
    answered = [r for r in recs if "prediction" in r]
    agree = sum(1 for r in answered if int(want[r["plan"]][r["i"]]) == r["prediction"])
    return {
        "requests": len(recs),
        "failed": sum(1 for r in recs if "error" in r),
        "answered": len(answered),
        "agreement_with_pytorch_pct": 100.0 * agree / len(answered) if answered else None,
        "probes": sum(1 for r in recs if r.get("probe")),
        "switches": len(run.get("switches", [])),
    }


def plot_adaptive(report: dict, runs: dict[str, dict], path: Path) -> None:
    """Over time: the shaped rate and the runner's estimate; the plan it ran; each request's latency."""
    from cpcdrl_deploy.core.plotting import plt, save_figure

    run = runs["adaptive"]
    recs = [{**r, "t": r["t"] - run["start_at"]} for r in run["records"]]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    ph = report["phases"]
    ax1.step(
        [p["start_s"] for p in ph] + [ph[-1]["end_s"]],
        [p["bytes_per_s"] / 1e3 for p in ph] + [ph[-1]["bytes_per_s"] / 1e3],
        where="post",
        label="shaped rate",
    )
    est = [(r["t"], r["estimate_bytes_per_s"] / 1e3) for r in recs if r.get("estimate_bytes_per_s")]
    if est:
        ax1.plot(*zip(*est), ".", ms=2, label="runner's estimate")
    ax1.set(yscale="log", ylabel="uplink (KB/s)")
    ax1.legend(fontsize=8)
    ax2.step([r["t"] for r in recs], [r["band"] for r in recs], where="post")
    ax2.set(ylabel="band (plan)", yticks=range(len(report["bands"])), yticklabels=[b["plan"] for b in report["bands"]])
    ok = [(r["t"], r["e2e_ms"]) for r in recs if "e2e_ms" in r]
    if ok:
        ax3.plot(*zip(*ok), ".", ms=2, label="adaptive, per request")
    for p in ph:
        if p.get("oracle"):
            ax3.hlines(p["oracle"]["p50"], p["start_s"], p["end_s"], colors="black", lw=1.5, label=None)
    ax3.set(yscale="log", ylabel="end to end (ms)", xlabel="time since the trace started (s)")
    ax3.legend(fontsize=8, title="black: best static plan's p50 per phase", title_fontsize=8)
    save_figure(fig, path)


def summary_lines(rep: dict) -> list[str]:
    """The report for people: per phase, each run's p50 and the oracle's; switches; checks."""
    statics = [n for n in rep["overall"] if n != "adaptive"]
    head = ["phase", "uplink", "band", "adaptive p50"] + [f"{n} p50" for n in statics] + ["oracle", "estimate"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def ms(v) -> str:
        return f"{v:.1f}" if v is not None else "-"

    for p in rep["phases"]:
        err = p.get("estimate_error")
        cells = [f"{p['start_s']:.0f}-{p['end_s']:.0f} s", f"{p['bytes_per_s'] / 1e3:.0f} KB/s", p["band"]]
        cells += [ms(p["adaptive"]["p50"])] + [ms(p[n]["p50"]) for n in statics]
        cells += [f"{ms(p['oracle']['p50'])} ({p['oracle']['plan']})" if p.get("oracle") else "-"]
        cells += [f"{err['error']:+.0%}" if err else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    o = rep["overall"]
    lines.append("overall p50/p90 ms: " + "; ".join(f"{n} {ms(v['p50'])}/{ms(v['p90'])}" for n, v in o.items()))
    delays = [d["delay_s"] for d in rep["switch_delays"] if d["delay_s"] is not None]
    missed = sum(1 for d in rep["switch_delays"] if d["delay_s"] is None)
    lines.append(
        f"{len(rep['switches'])} switches; delay after a rate change: median"
        f" {np.median(delays):.2f} s over {len(delays)}"
        if delays
        else f"{len(rep['switches'])} switches"
    )
    if missed:
        lines.append(f"{missed} rate changes the runner did not follow within their phase")
    for n, c in rep["checks"].items():
        agree = c["agreement_with_pytorch_pct"]
        lines.append(
            f"{n}: {c['answered']} of {c['requests']} answered, {c['failed']} failed, agreement with PyTorch "
            + (f"{agree:.1f} %" if agree is not None else "-")
        )
    return lines
