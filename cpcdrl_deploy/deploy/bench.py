"""``cpcdrl bench``: many plans measured against each other on the device, so that the host's drift cancels.

A Pi heats up and throttles and this project's VM drifts 1.2x within minutes,
so one plan's absolute p50 says more about the minute it was taken in than
about the plan. Bench measures plans *together*, the way careful benchmark
tools do (Google Benchmark's random interleaving, pyperf's paired
comparisons): every plan is exported, every head uploaded, every tail served
by one server (one KServe v2 model per tail), and the edge runner visits the
plans in a freshly shuffled order each round, a few requests each, until
every plan has ``seconds`` of requests (``edge_runner.run_bench``).

It reports per plan p50/p90/p99 with bootstrap confidence intervals, the
edge / transfer+cloud split, and the *paired ratio* to a reference plan: in
each round, the plan's median over the reference's median (the two measured
seconds apart), the median of those over rounds, with a bootstrap interval
over rounds. Each latency estimate (the optimiser's anchored tables, their
plain sums, the MAC model with F fitted per host, the paper's MAC model) is
judged by what an optimiser needs from it: whether it orders the plans as the
device does (Spearman, Kendall, and the share of plan pairs it predicts to
differ by at least 10 % that it orders right), and how far its ratios are from
the measured ones.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.fileio import atomic_write_bytes, atomic_write_json
from cpcdrl_deploy.core.progress import Ticker, no_ticker
from cpcdrl_deploy.deploy.export import export_models
from cpcdrl_deploy.deploy.inputs import DeviceInputs
from cpcdrl_deploy.deploy.reports import BenchReport
from cpcdrl_deploy.deploy.run import predictions, shape_of
from cpcdrl_deploy.devices.hostload import HostSampler, load_in_windows
from cpcdrl_deploy.devices.remote import connect
from cpcdrl_deploy.measure.fidelity import bootstrap_ci, fidelity, spearman
from cpcdrl_deploy.measure.profile import load_profile
from cpcdrl_deploy.measure.runtimes import check_runtime
from cpcdrl_deploy.models.data import subset
from cpcdrl_deploy.models.evaluate import predict
from cpcdrl_deploy.search.plan import Plan, load_plan
from cpcdrl_deploy.search.plan_model import rebuild
from cpcdrl_deploy.serving.session import InterleavedPlan, run_interleaved, server_address

# the anchored tables (the optimiser's), the same anchored to back-to-back timings (profiles that timed whole
# models as served too), plain sums, MACs with F fitted, the paper's MACs
ESTIMATES = ("table", "table_warm", "table_sum", "analytic", "paper")
Log = Callable[[str], None]


@dataclass
class BenchRequest:
    plans: list[Path]
    edge: str = "local"
    out: Path = Path("bench")
    seconds: float = 10.0  # of requests per plan, at least
    block: int = 3  # requests per plan per visit, at least
    slice_ms: float = 100.0  # and time per plan per visit, at least: each round gives every plan about the same time
    min_rounds: int = 5
    images: int = 64  # distinct test images, sent in turn
    reference: int = 0  # the plan the ratios are taken to
    bind: str | None = None
    timeout_s: float = 10.0
    edge_profile: str | None = None  # default: the first plan's
    cloud_profile: str | None = None
    trust_host_key: bool = False
    seed: int = 0
    runtime: str | None = None  # every head's runtime; None: each plan's own
    # a folder: profile the edge and this host once everything is uploaded, right before the rounds, and price the plans
    # with those
    profile_before_rounds: Path | None = None


def paired_ratio(records: list[dict], plan: str, ref: str, seed: int = 0) -> dict:
    """The plan's median end to end over the reference's, round by round (each pair measured seconds apart)."""
    by: dict[tuple[str, int], list[float]] = {}
    for r in records:
        if "e2e_ms" in r:
            by.setdefault((r["plan"], r["round"]), []).append(r["e2e_ms"])
    rounds = sorted({rd for (p, rd) in by if p == plan} & {rd for (p, rd) in by if p == ref})
    rs = np.array([np.median(by[(plan, rd)]) / np.median(by[(ref, rd)]) for rd in rounds])
    if not len(rs):
        return {"median": None, "ci95": None, "rounds": 0}
    return {"median": float(np.median(rs)), "ci95": list(bootstrap_ci(rs, np.median, seed=seed)), "rounds": len(rs)}


SERVER_DRIFT_WARN = 1.2  # summary_lines warns when the server's compute departs this far from its profile


def server_speed(records: list[dict], predicted_cloud_ms: dict[str, float], min_ms: float = 1.0) -> dict | None:
    """The server's compute against the cloud tables, round by round: the median of ``server_ms`` / prediction.

    Why: pairing with a reference plan cancels drift that the device and the
    server share, not a slowdown of the server alone (on the testbed they run
    on different vCPUs). Only tails the tables put at ``min_ms`` or more
    count (all of them if none is), so the server's fixed cost per request
    on tiny tails does not pass for drift. None when no request has both.
    """
    big = {k: v for k, v in predicted_cloud_ms.items() if v >= min_ms} or {
        k: v for k, v in predicted_cloud_ms.items() if v > 0
    }
    per: dict[int, list[float]] = {}
    for r in records:
        if r.get("plan") in big and r.get("server_ms") is not None:
            per.setdefault(r["round"], []).append(r["server_ms"] / big[r["plan"]])
    if not per:
        return None
    ratios = [float(np.median(v)) for _, v in sorted(per.items())]
    return {
        "median": float(np.median(ratios)),
        "min": min(ratios),
        "max": max(ratios),
        "per_round": ratios,
        "rounds": sorted(per),
        "min_predicted_ms": min_ms,
    }


def host_load_summary(per_round: list[dict | None], server: dict | None) -> dict | None:
    """This host's CPUs over the rounds (busy and stolen shares, per CPU), and whether the server's speed followed
    the steal.

    ``per_round``: ``hostload.load_in_windows`` over the runner's round times.
    The Spearman correlation pairs each round's ``server_vs_tables`` ratio
    with the most any CPU lost to steal in that round.
    """
    have = [(k, w) for k, w in enumerate(per_round) if w]
    if not have:
        return None
    steal = [max(w["steal_pct"]) for _, w in have]
    busy = np.array([w["busy_pct"] for _, w in have])
    out = {
        "per_round": per_round,
        "steal_pct_max_cpu_median": float(np.median(steal)),
        "steal_pct_max_cpu_max": float(max(steal)),
        "busy_pct_median_per_cpu": [float(v) for v in np.median(busy, axis=0)],
        "server_vs_steal_spearman": None,
    }
    if server:
        by_round = dict(zip(server["rounds"], server["per_round"]))
        pairs = [(by_round[k], max(w["steal_pct"])) for k, w in have if k in by_round]
        rho = spearman([a for a, _ in pairs], [b for _, b in pairs]) if len(pairs) >= 5 else float("nan")
        out["server_vs_steal_spearman"] = None if np.isnan(rho) else rho  # NaN (a constant side) has no place in JSON
    return out


def _paper_model(model: str, shape, link_bytes_per_s: float, rtt_ms: float) -> float:
    """The paper's MAC model as written (Sec. IV-A rates), over the measured link: the estimate the project started
    from."""
    from cpcdrl_deploy.measure.latency import AnalyticLatencyModel

    p = load_profile("paper")
    lm = AnalyticLatencyModel(
        p.compute_rate("edge").macs_per_s,
        p.compute_rate("cloud").macs_per_s,
        link_bytes_per_s,
        link_bytes_per_s,
        rtt_ms,
    )
    return lm.predict(model, shape).total_ms


def bench(req: BenchRequest, log: Log = lambda s: None, tick: Ticker = no_ticker) -> dict:
    """Export, upload, serve and run every plan interleaved; write ``out/bench-report.json`` and ``out/bench.png``
    atomically."""
    t_start = time.perf_counter()
    plans, edge_profile, cloud_profile = _check_bench(req)
    dev = connect(req.edge, trust_host_key=req.trust_host_key)
    out = Path(req.out)
    try:
        bind = server_address(req.edge, req.bind)
        entries, failed, given = export_all(req, plans, out, log, tick)
        inputs = given.save(out / "inputs.npy")
        runtimes = {e["manifest"].runtime.head for e in entries if e["manifest"].runtime.head}
        for rt in sorted(runtimes):
            check_runtime(dev, rt)
        spec = [interleaved_plan(e, out / "exports" / e["id"]) for e in entries]
        args = [f"--timeout {req.timeout_s:g}", f"--seconds {req.seconds:g}", f"--block {req.block}"]
        args += [f"--slice-ms {req.slice_ms:g}", f"--min-rounds {req.min_rounds}", f"--seed {req.seed}"]
        fresh: dict[str, str] = {}

        folder, plans_edge = req.profile_before_rounds, edge_profile

        def profile_now() -> None:
            assert folder is not None  # handed to the run only with --profile-before-rounds
            models, rts = sorted({p.model for p in plans}), sorted(runtimes | {"onnxruntime"})
            fresh.update(_profile_both(dev, models, rts, Path(folder), bind, plans_edge, log))

        log(f"running {len(spec)} plans interleaved on {dev.name}, at least {req.seconds:g} s of requests each")
        with HostSampler() as sampler:  # the cloud side's CPUs (and, on the testbed, the emulated device's)
            runner = run_interleaved(
                dev,
                bind,
                spec,
                inputs,
                args,
                budget_s=300.0 + len(spec) * (4 * req.seconds + 30.0),
                log=log,
                close=False,
                before_run=profile_now if req.profile_before_rounds else None,
            )
        runner["host_load"] = load_in_windows(sampler.samples, runner.get("round_times") or [])
    finally:
        dev.close()
    failed.update(runner["failed"])
    # the sitting's raw measurements first: an analysis that fails must not lose them
    atomic_write_json(out / "runner-report.json", runner)
    chosen_with = {"edge": edge_profile, "cloud": cloud_profile}
    if fresh:
        edge_profile, cloud_profile = fresh["edge"], fresh["cloud"]
    report = analyse(entries, runner, failed, req, edge_profile, cloud_profile, dev.name)
    if fresh:  # the plans were made with the older profiles; the estimates judged here are the fresh ones'
        report["profiles_of_the_plans"] = chosen_with
    report["wall_s"] = time.perf_counter() - t_start
    BenchReport.from_data(report, "bench report").save(out / "bench-report.json")  # checked against its schema
    try:
        plot_bench(report, out / "bench.png")
    except Exception as exc:  # noqa: BLE001 - a missing plot must not lose the measurements
        log(f"no plot: {exc}")
    return report


def _percentile(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q))


def _check_bench(req: BenchRequest) -> tuple[list[Plan], str, str]:
    """(the plans, edge profile, cloud profile) of a request, refused in one line before anything starts."""
    if len(req.plans) < 2:
        raise CpcdrlError("bench compares plans: give at least two")
    if not 0 <= req.reference < len(req.plans):
        raise CpcdrlError(f"--reference must be 0..{len(req.plans) - 1}")
    if req.seconds <= 0 or req.block < 1 or req.images < 1:
        raise CpcdrlError("--seconds must be > 0, --block and --images at least 1")
    plans: list[Plan] = [load_plan(p) for p in req.plans]  # every plan valid before anything starts
    edge_profile = req.edge_profile or plans[0].profiles.edge
    cloud_profile = req.cloud_profile or plans[0].profiles.cloud
    if not edge_profile or not cloud_profile:
        raise CpcdrlError("the first plan names no profiles: pass --edge-profile/--cloud-profile")
    load_profile(edge_profile), load_profile(cloud_profile)
    return plans, edge_profile, cloud_profile


def export_all(
    req: BenchRequest, plans: list[Plan], out: Path, log: Log, tick: Ticker
) -> tuple[list[dict], dict[str, str], DeviceInputs]:
    """Every plan exported and its pruned PyTorch answers on the images; the plans that failed, and the images."""
    entries, failed = [], {}
    given: DeviceInputs | None = None
    for i, (path, plan) in enumerate(zip(req.plans, plans)):
        tick("plans exported", i, len(plans))
        pid = f"p{i}"
        try:
            original, pruned, ds = rebuild(plan, plan_path=path)
            if given is None:
                given = DeviceInputs.pick(ds.test, subset(len(ds.test), req.images, req.seed))
            runtime = req.runtime or plan.runtime
            m = export_models(plan, original, pruned, ds, out / "exports" / pid, runtime=runtime, log=lambda s: None)
            with torch.no_grad():
                want = predict(pruned, given.prepared).numpy()
        except CpcdrlError as exc:
            failed[pid] = f"export: {exc}"
            log(f"{pid} ({path}): {exc}")
            continue
        entries.append({"id": pid, "path": str(path), "plan": plan, "manifest": m, "want": want})
    tick("plans exported", len(plans), len(plans))
    if given is None:
        raise CpcdrlError("no plan could be exported")
    return entries, failed, given


def interleaved_plan(entry: dict, folder: Path) -> InterleavedPlan:
    """An exported plan as the interleaved run takes it: its head file, its tail's folder and output."""
    files = entry["manifest"].files
    return InterleavedPlan(
        entry["id"],
        folder / files["head"].file if "head" in files else None,
        folder if "tail" in files else None,
        files["tail"].outputs[0].name if "tail" in files else None,
    )


def _profile_both(
    dev, models: list[str], runtimes: list[str], folder: Path, bind: str, plans_edge: str, log: Log
) -> dict[str, str]:
    """Profile ``models`` on the edge and on this host into ``folder``, as ``cpcdrl profile`` would; the two paths.

    Why: uploads over a slow link and the optimiser's searches put an hour
    between a sitting's profiles and its rounds, and this host's speed for
    some models moves in an hour (a VGG16 sitting's device profile priced
    mid-sized heads 1.5x fast; one taken after the bench agreed with it).
    Profiled here, minutes before the rounds, the estimates are judged on
    the host the rounds run on. A local edge has no link to time: it keeps
    the link of the plans' edge profile, and its notes say so.
    """
    from cpcdrl_deploy.measure.profile import save_profile
    from cpcdrl_deploy.measure.profiler import profile_host

    folder.mkdir(parents=True, exist_ok=True)
    edge_path, cloud_path = folder / f"edge-{dev.name}.json", folder / "cloud-local.json"
    on_edge = dev.name != "local"
    t0 = time.perf_counter()
    log(f"profiling {', '.join(models)} on {dev.name}, then on this host, before the rounds")
    prof = profile_host(
        dev,
        models,
        edge_path,
        measure_link_too=on_edge,
        request_probe_at=bind if on_edge else None,
        runtime=runtimes,
        log=log,
    )
    if prof.link is None:
        prof.link = load_profile(plans_edge).link
        prof.notes = f"{prof.notes}; link from {plans_edge}, not measured (a local edge)".lstrip("; ")
        save_profile(prof, edge_path)
    local = connect("local")
    try:
        profile_host(local, models, cloud_path, measure_link_too=False, log=log)
    finally:
        local.close()
    log(f"profiled in {time.perf_counter() - t0:.0f} s")
    return {"edge": str(edge_path), "cloud": str(cloud_path)}


def plan_estimates(
    plan: Plan, payload: int | None, edge_profile: str, cloud_profile: str, edge_runtime: str
) -> tuple[dict[str, float], dict[str, float]]:
    """Each estimate's end-to-end price of ``plan`` (``payload``: bytes sent per request, None for cut N), and its
    cloud part (no paper's)."""
    pred = predictions(
        plan.model,
        plan.cut,
        plan.ratios,
        edge_profile,
        cloud_profile,
        payload,
        round_to=plan.prune.round_to,
        edge_runtime=edge_runtime,
    )
    link = pred.pop("_link")
    total = {k: v["total_ms"] for k, v in pred.items() if k in ESTIMATES}
    shape, _ = shape_of(plan.model, plan.cut, plan.ratios, plan.prune.round_to)
    if payload is not None:
        shape = dataclasses.replace(shape, cut_bytes=payload)
    total["paper"] = _paper_model(plan.model, shape, link["uplink_bytes_per_s"], link["rtt_ms"])
    return total, {k: v["cloud_ms"] for k, v in pred.items() if k in ESTIMATES}


def _plan_row(
    e: dict, recs: list[dict], failed: dict, req: BenchRequest, ref: str, edge_profile: str, cloud_profile: str
) -> dict:
    """One plan's measured percentiles, agreement with PyTorch, paired ratio to the reference and predictions."""
    pid, plan = e["id"], e["plan"]
    mine = [r for r in recs if r["plan"] == pid and "e2e_ms" in r]
    row: dict = {
        "id": pid,
        "plan": e["path"],
        "model": plan.model,
        "method": plan.method,
        "cut": plan.cut,
        "n_layers": plan.n_layers,
        "ratios_mean": float(np.mean(plan.ratios)) if plan.ratios else 1.0,
        "runtime": e["manifest"].runtime.model_dump(),
        "failed": failed.get(pid),
    }
    if pid in failed or not mine:
        return row
    e2e = np.array([r["e2e_ms"] for r in mine])
    preds = np.array([r["prediction"] for r in mine])
    agree = float((preds == e["want"][[r["i"] for r in mine]]).mean() * 100.0)
    stats: dict[str, Any] = {}
    for q in (50, 90, 99):
        stats[f"p{q}"] = float(np.percentile(e2e, q))
        stats[f"p{q}_ci95"] = list(bootstrap_ci(e2e, functools.partial(_percentile, q=q), seed=req.seed))
    payload = int(np.median([r["bytes_sent"] for r in mine])) if "tail" in e["manifest"].files else None
    runtime = e["manifest"].runtime.head or "onnxruntime"
    shape_pred, cloud_pred = plan_estimates(plan, payload, edge_profile, cloud_profile, runtime)
    row.update(
        requests=len(mine),
        e2e_ms=stats,
        edge_p50_ms=float(np.median([r["edge_ms"] for r in mine])),
        transfer_and_cloud_p50_ms=float(np.median([r["remote_ms"] for r in mine])),
        bytes_per_request=payload,
        agreement_with_pytorch_pct=agree,
        predicted_ms=shape_pred,
        ratio_to_reference=paired_ratio(recs, pid, ref, req.seed),
    )
    # where the transfer + cloud time goes: the tail's compute as the server timed it, against the cloud tables
    server = [r["server_ms"] for r in mine if r.get("server_ms") is not None]
    if server:
        row.update(cloud_server_p50_ms=float(np.median(server)), predicted_cloud_ms=cloud_pred)
    return row


def _fidelity(good: list[dict], refrow: dict | None) -> dict:
    """Each estimate's rank and ratio fidelity over the plans that answered (``predicted_ratio`` set on each row)."""
    fid: dict = {}
    if refrow is None or len(good) < 2:
        return fid
    meas = [r["e2e_ms"]["p50"] for r in good]
    meas_ratio = [r["ratio_to_reference"]["median"] or float("nan") for r in good]
    for est in ESTIMATES:
        if not all(est in r["predicted_ms"] for r in good):
            continue
        pr = [r["predicted_ms"][est] for r in good]
        for r in good:
            r.setdefault("predicted_ratio", {})[est] = r["predicted_ms"][est] / refrow["predicted_ms"][est]
        fid[est] = fidelity(pr, meas, [r["predicted_ratio"][est] for r in good], meas_ratio)
    return fid


def analyse(
    entries: list[dict],
    runner: dict,
    failed: dict,
    req: BenchRequest,
    edge_profile: str,
    cloud_profile: str,
    edge_name: str,
) -> dict:
    """Per-plan statistics, paired ratios and each estimate's fidelity, from the runner's records."""
    recs = runner["records"]
    ok_ids = [e["id"] for e in entries if e["id"] not in failed]
    ref = f"p{req.reference}"
    if ref not in ok_ids:
        ref = ok_ids[0] if ok_ids else ref
    rows = [_plan_row(e, recs, failed, req, ref, edge_profile, cloud_profile) for e in entries]
    rows += [
        {"id": pid, "failed": why} for pid, why in failed.items() if pid not in {e["id"] for e in entries}
    ]  # never exported
    rows.sort(key=lambda r: int(r["id"][1:]))
    good = [r for r in rows if r.get("e2e_ms")]
    refrow = next((r for r in good if r["id"] == ref), None)
    fid = _fidelity(good, refrow)
    # the tables' cloud price where every served plan has one (profiles without tables for the model: the fitted MACs')
    served = [r for r in good if r.get("predicted_cloud_ms")]
    by = next(
        (
            e
            for e in ("table", "analytic")
            if served and all(r["predicted_cloud_ms"].get(e) is not None for r in served)
        ),
        None,
    )
    cloud = {r["id"]: r["predicted_cloud_ms"][by] for r in served} if by else {}
    speed = server_speed(recs, cloud)
    host = host_load_summary(runner.get("host_load") or [], speed)
    return {
        "schema_version": BenchReport.VERSION,
        "kind": BenchReport.KIND,
        "edge": edge_name,
        "profiles": {"edge": edge_profile, "cloud": cloud_profile},
        "reference": ref,
        "rounds": runner["rounds"],
        "block": req.block,
        "seconds_per_plan": req.seconds,
        "seed": req.seed,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "plans": rows,
        "failed": failed,
        "fidelity": fid,
        "server_vs_tables": {**speed, "estimate": by} if speed else None,
        "host_load": host,
        "records": recs,
    }


def plot_bench(report: dict, path: Path) -> None:
    """Predicted vs measured paired ratios per estimate, with the ±10 % band; axes fitted to the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [r for r in report["plans"] if r.get("predicted_ratio") and r["ratio_to_reference"]["median"]]
    if not good:
        return
    fig, ax = plt.subplots(figsize=(6, 5))
    meas = [r["ratio_to_reference"]["median"] for r in good]
    allv = list(meas)
    for est, mark in zip(ESTIMATES, "oDs^v"):
        pr = [r["predicted_ratio"].get(est) for r in good]
        if None in pr:
            continue
        allv += pr
        f = report["fidelity"].get(est, {})
        ax.scatter(meas, pr, marker=mark, label=f"{est} (Spearman {f.get('spearman', float('nan')):.3f})", alpha=0.7)
    lo, hi = min(allv) * 0.9, max(allv) * 1.1
    if hi / lo > 5:  # ratios spanning more than a factor of a few read better on log axes
        ax.set_xscale("log")
        ax.set_yscale("log")
    xs = np.geomspace(lo, hi, 50)
    ax.plot(xs, xs, "k-", lw=0.8)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="grey", alpha=0.2, label="±10 %")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"measured p50 / reference ({report['reference']}), paired by round")
    ax.set_ylabel("predicted / reference")
    ax.set_title(f"{len(good)} plans on {report['edge']}, {report['rounds']} interleaved rounds")
    ax.legend(fontsize=7)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def summary_lines(report: dict) -> list[str]:
    lines = [
        f"{len(report['plans'])} plans on {report['edge']}, {report['rounds']} interleaved rounds; reference"
        f" {report['reference']}"
    ]
    for r in report["plans"]:
        if not r.get("e2e_ms"):
            lines.append(f"  {r['id']}: failed ({r.get('failed')})")
            continue
        rr = r["ratio_to_reference"]
        ci = f" [{rr['ci95'][0]:.2f}, {rr['ci95'][1]:.2f}]" if rr["ci95"] else ""
        pr = r.get("predicted_ratio", {}).get("table")
        lines.append(
            f"  {r['id']} {r['model']} cut {r['cut']}/{r['n_layers']}: p50 {r['e2e_ms']['p50']:.2f} ms, ratio"
            f" {rr['median']:.3f}{ci}" + (f", tables predict {pr:.3f}" if pr is not None else "")
        )
    sv = report.get("server_vs_tables")
    if sv and not 1 / SERVER_DRIFT_WARN <= sv["median"] <= SERVER_DRIFT_WARN:
        lines.append(
            f"  warning: the server's compute took {sv['median']:.2f}x the {sv.get('estimate') or 'table'} estimate's"
            f" cloud time (per round {sv['min']:.2f}-{sv['max']:.2f}x); pairing does not cancel a server that alone"
            " runs slower or faster: profile the cloud again beside the bench"
        )
    hl = report.get("host_load")
    if hl:
        rho = hl["server_vs_steal_spearman"]
        lines.append(
            f"  this host's CPUs: busy {', '.join(f'{b:.0f}' for b in hl['busy_pct_median_per_cpu'])} % (median per"
            f" CPU), stolen by the hypervisor {hl['steal_pct_max_cpu_median']:.1f} % (median round, worst CPU; max"
            f" {hl['steal_pct_max_cpu_max']:.1f} %)"
            + (f"; server speed vs steal per round: Spearman {rho:.2f}" if rho is not None else "")
        )
    for est, f in report["fidelity"].items():
        lines.append(
            f"  {est}: Spearman {f['spearman']:.2f}, Kendall {f['kendall']:.2f}, pair order {f['pair_order_right']:.2f}"
            f" of {f['pairs_predicted_10pct_apart']}, ratio error median {f['ratio_error_median_pct']:.1f} % p90"
            f" {f['ratio_error_p90_pct']:.1f} %"
        )
    return lines
