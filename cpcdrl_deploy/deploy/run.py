"""`cpcdrl deploy`: run a plan for real and set its measured latency beside the estimates.

1. export the plan (head / tail / full ONNX, checked against PyTorch);
2. start the KServe v2 server on the cloud host (this machine) on an address
   the edge can reach, with a fresh bearer token;
3. upload the head, the edge runner and N preprocessed test images to the edge
   (SSH, as the profiler does) and run them there, one image per request;
4. stop everything it started, whatever happened;
5. report accuracy, agreement with the pruned PyTorch model, end-to-end
   p50/p90/p99 with the edge / transfer+cloud split, the protocol overhead,
   and the analytic and measured-table predictions with their errors.

The speed probe: a host's speed drifts (a Pi heats up and throttles; this
project's build VM ran 1.6x slower for a while between a profile and a
deploy), and a table is only as true as the speed its host had when it was
measured. So ``deploy`` times a fixed reference model (the whole unpruned
model, the profile's own ``head{N}`` entry, made the same way) on the edge
between the requests and on the cloud host before and after them, and adds a
``table_drift`` prediction: the tables with each side scaled by (probe now) /
(probe in the profile), on the edge request by request (``_drift``). The raw
predictions stay beside it.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import secrets
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpcdrl_deploy.compress.pruning import PlanShape, PruneConfig, channel_groups, plan_shape
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.progress import Ticker, no_ticker
from cpcdrl_deploy.deploy.export import export_models
from cpcdrl_deploy.deploy.inputs import DeviceInputs
from cpcdrl_deploy.deploy.reports import DeployReport
from cpcdrl_deploy.devices.remote import Device, connect
from cpcdrl_deploy.devices.testbed import on_host_cpus
from cpcdrl_deploy.measure.compare import fitted_rate
from cpcdrl_deploy.measure.latency import (
    AnalyticLatencyModel,
    build_latency_model,
    edge_runtimes,
    throttled_latencies,
    transfer_ms,
)
from cpcdrl_deploy.measure.profile import LinkProfile, Profile, load_profile
from cpcdrl_deploy.measure.profiler import PROFILER, WEIGHTS, probe_model
from cpcdrl_deploy.measure.runtimes import check_runtime, get_runtime
from cpcdrl_deploy.models.data import subset
from cpcdrl_deploy.models.evaluate import predict
from cpcdrl_deploy.models.graph import ModelAnalysis, analyze
from cpcdrl_deploy.models.zoo import UnitModel, build_model, get_entry
from cpcdrl_deploy.search.plan import Plan, load_plan
from cpcdrl_deploy.search.plan_model import rebuild
from cpcdrl_deploy.serving.manifest import ExportManifest
from cpcdrl_deploy.serving.session import (
    CloudServer,
    count_requests,
    run_edge_runner,
    server_address,
    tear_down,
    upload_inputs,
    upload_runner,
)

Log = Callable[[str], None]


@dataclass
class DeployRequest:
    plan: Path
    edge: str = "local"
    cloud: str = "local"
    requests: int = 50
    data: str | None = None
    out: Path = Path("deploy")
    transfer: str | None = None  # the cut tensor's encoding; None: the one the plan was optimised for
    quantize: str | None = None
    fallback: bool = False
    bind: str | None = None  # address the server listens on; default: what the edge can reach
    timeout_s: float = 10.0
    edge_profile: str | None = None  # default: the plan's profiles
    cloud_profile: str | None = None
    trust_host_key: bool = False
    seed: int = 0
    probe: bool = True  # time the reference model beside the requests (when the profiles have it)
    runtime: str | None = None  # the head's runtime on the device (runtimes.py); None: the plan's


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values, dtype=float)
    return {
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
    }


def shape_of(
    model: str, cut: int, ratios: Sequence[float], round_to: int, net: UnitModel | None = None
) -> tuple[PlanShape, ModelAnalysis]:
    """A plan's channel counts, MACs and cut size (what the latency models price), and the model's analysis."""
    net = net if net is not None else build_model(model)  # the unpruned architecture; weights do not matter here
    a = analyze(net, get_entry(model).input_size, model)
    return plan_shape(a, channel_groups(net, a), cut, [float(r) for r in ratios], round_to), a


def predictions(
    model: str,
    cut: int,
    ratios: Sequence[float],
    edge_profile: str,
    cloud_profile: str,
    payload_bytes: int | None,
    net: UnitModel | None = None,
    drift: dict[str, float | None] | None = None,
    round_to: int = PruneConfig.round_to,
    edge_runtime: str = "onnxruntime",
) -> dict[str, dict]:
    """The plan's latency under the analytic model (rates fitted to measured hosts) and the measured tables.

    The transfer term uses the bytes actually sent per request (``payload_bytes``:
    the cut tensor as transferred, plus the protocol's JSON header) where known.
    ``edge_runtime``: the head's runtime; its edge tables where the profile has
    them, else ONNX Runtime's (the description says which).
    ``drift`` ({"edge": factor, "cloud": factor}, from the speed probe) adds
    ``table_drift``: the anchored tables with each side's compute scaled by its factor.
    """
    ep, cp = load_profile(edge_profile), load_profile(cloud_profile)
    link: LinkProfile | None = ep.link or cp.link
    if link is None:
        raise CpcdrlError(f"neither {edge_profile!r} nor {cloud_profile!r} has a link measurement")
    shape, a = shape_of(model, cut, ratios, round_to, net)
    out: dict[str, dict] = {}
    models: dict[str, Any] = {}
    if ep.kind == "measured" and cp.kind == "measured" and model in ep.tables and model in cp.tables:
        runtime = edge_runtime if edge_runtime in edge_runtimes(ep, model) else "onnxruntime"
        models["table"] = table = build_latency_model(ep, cp, link, runtime)
        models["table_sum"] = dataclasses.replace(table, anchor=False)  # type: ignore[type-var]
        warm = dataclasses.replace(table, cold=False)  # type: ignore[type-var]
        # the profiles timed whole models as served too: the back-to-back anchors beside
        if warm.describe() != table.describe():
            models["table_warm"] = warm
        models["table_median"] = dataclasses.replace(table, stat="median_ms")  # type: ignore[type-var]
        f_e, f_c = fitted_rate(ep, "edge", model), fitted_rate(cp, "cloud", model)
        models["analytic"] = AnalyticLatencyModel.over(f_e, f_c, link)
    elif ep.kind == "analytic" and cp.kind == "analytic":
        models["analytic"] = build_latency_model(ep, cp, link)
    for name, lm in models.items():
        b = lm.predict(model, shape)
        d = b.to_dict()
        if payload_bytes is not None and shape.cut < a.n_layers:
            d["transfer_ms"] = transfer_ms(payload_bytes, link.uplink_bytes_per_s, link.per_request_ms)
            d["total_ms"] = d["edge_ms"] + d["transfer_ms"] + d["cloud_ms"] + d["return_ms"]
        d["model"] = lm.describe()
        out[name] = d
    if "table" in out and drift and any(drift.values()):
        fe, fc = drift.get("edge") or 1.0, drift.get("cloud") or 1.0
        d = {**out["table"], "edge_ms": out["table"]["edge_ms"] * fe, "cloud_ms": out["table"]["cloud_ms"] * fc}
        d["total_ms"] = d["edge_ms"] + d["transfer_ms"] + d["cloud_ms"] + d["return_ms"]
        d["model"] = f"{out['table']['model']}; edge x{fe:.3f}, cloud x{fc:.3f} (speed probe now / in the profile)"
        out["table_drift"] = d
    quota = device_quota(ep)
    if "table_median" in out and quota is not None:
        out["table_quota"] = _through_quota(out["table_median"], quota)
    out["_link"] = {
        "uplink_bytes_per_s": link.uplink_bytes_per_s,
        "rtt_ms": link.rtt_ms,
        "request_overhead_ms": link.request_overhead_ms,
    }
    return out


def _through_quota(med: dict, quota: tuple[float, float, float]) -> dict:
    """Per-request latency on a quota-limited device: the unthrottled run time (per-run medians) through CFS
    bandwidth control, the device idling while the cloud answers."""
    share, period_ms, tick_ms = quota
    idle = med["transfer_ms"] + med["cloud_ms"] + med["return_ms"]
    lat = np.array(throttled_latencies(med["edge_ms"], idle, share, period_ms, tick_ms)[50:])  # past the first periods
    d = {
        **med,
        "edge_ms": float(np.percentile(lat, 50)),
        "edge_p90_ms": float(np.percentile(lat, 90)),
        "edge_mean_ms": float(lat.mean()),
    }
    d["total_ms"] = d["edge_ms"] + idle
    d["total_p90_ms"] = d["edge_p90_ms"] + idle
    d["model"] = f"{med['model']} through a CPU quota of {share:g} core per {period_ms:g} ms, {tick_ms:g} ms ticks"
    return d


def device_quota(profile: Profile) -> tuple[float, float, float] | None:
    """(CPU share, CFS period ms, scheduler tick ms) of the device that measured ``profile``; None if not quota-limited.

    A duty-cycled testbed is not quota-limited: it is slowed in 250 us windows, which its per-layer tables already show.
    """
    host = profile.host or {}
    hz = host.get("kernel_hz")
    tick = 1000.0 / float(hz) if hz else 4.0  # not recorded: HZ=250, the common default (and this project's build VMs)
    tb = host.get("testbed")
    if tb and tb["throttle"] != "quota":
        return None
    if tb and tb.get("cpu_share"):
        return float(tb["cpu_share"]), float(tb["cfs_period_us"]) / 1000.0, tick
    q = str(
        host.get("cpu_quota") or ""
    ).split()  # what the profiler read from the device's cgroup: "quota period" in us
    if len(q) == 2 and q[0].lstrip("-").isdigit() and int(q[0]) > 0 and q[1].isdigit() and int(q[1]) > 0:
        return int(q[0]) / int(q[1]), int(q[1]) / 1000.0, tick
    return None


def probe_reference(profile: Profile, model: str, n_layers: int) -> dict | None:
    """How ``profile`` timed the speed probe (its whole-model head): ms and the settings of one round; None without one.

    Profiles made before the probe's weights were (WEIGHTS) timed a different model: None.
    """
    t = profile.tables.get(model) if profile.kind == "measured" else None
    if t is None or t.weights != WEIGHTS:
        return None
    head = next((h for h in t.heads if h.cut == n_layers), None)
    if head is None:
        return None
    host = profile.host or {}
    rounds = max(1, int(host.get("rounds") or 1))
    return {
        "ms": head.ms,
        "threads": t.threads,
        "repeats": max(1, int(host.get("repeats") or 20) // rounds),
        # one round's window: recorded by newer profilers; older ones split 200 ms over their rounds
        "min_ms": float(host.get("round_window_ms") or 200.0 / rounds),
        "profiled_at": t.measured_at or host.get("measured_at"),
        "classes": t.classes,  # the probe is built with the count the profile timed
    }


def _time_probe_here(path: Path, shape: list[int], ref: dict, blocks: int = 2) -> list[dict]:
    """Time the probe on this machine as the profiler does, ``blocks`` rounds."""
    from cpcdrl_deploy.ondevice.timer import load_session, time_session

    with on_host_cpus():  # this thread plays the cloud here: off the device's CPU, as the server is
        sess = load_session(str(path), ref["threads"])
        time_session(
            sess, shape, 5, 1, ref["min_ms"] / 1000.0
        )  # one untimed block: the first one after loading read up to 6x the rest
        return [time_session(sess, shape, 1, ref["repeats"], ref["min_ms"] / 1000.0) for _ in range(blocks)]


def _drift(blocks: list[dict], ref: dict, request_ids: list[int] | None = None) -> dict:
    """The speed factor: probe time now / in the profile.

    With ``request_ids`` (the edge, probed between the requests) each request
    gets the mean of the blocks just before and just after it, and the factor
    is the median over the requests: this VM's speed comes in spells of
    seconds (blocks of one run went 7.4, 14.4, 14.5, 15.7, 7.8 ms), and a
    request is as slow as the spell it fell in. Without them (the cloud,
    probed before and after), the median of the blocks.
    """
    means = [b["mean_ms"] for b in blocks]
    med = float(np.median(means))
    d = {
        "reference_ms": ref["ms"],
        "profiled_at": ref["profiled_at"],
        "block_means_ms": means,
        "median_ms": med,
        "factor": med / ref["ms"],
    }
    if request_ids and len(blocks) > 1:
        starts = [b["before_request"] for b in blocks]
        per = [
            (means[k] + means[min(k + 1, len(means) - 1)]) / 2.0
            for k in (max(0, bisect.bisect_right(starts, i) - 1) for i in request_ids)
        ]
        d.update(
            block_before_request=starts,
            median_ms=float(np.median(per)),
            factor=float(np.median(per)) / ref["ms"],
            per_request=True,
        )
    return d


@dataclass
class _Staged:
    """What ``deploy`` prepared on this host before touching the device: the export, the images, the speed probe."""

    plan: Plan
    edge_profile: str
    cloud_profile: str
    out: Path
    export_dir: Path
    manifest: ExportManifest
    original: UnitModel
    idx: np.ndarray
    y: np.ndarray
    torch_pred: np.ndarray
    inputs: Path
    refs: dict[str, dict | None]
    probe_path: Path
    probe_shape: list[int] = dataclasses.field(default_factory=list)

    @property
    def files(self) -> dict:
        return self.manifest.files


@dataclass
class _Ran:
    """What the device and the server did: the runner's report, the server's fate, the probe blocks of each side."""

    runner: dict
    server_url: str | None
    server_alive: bool | None
    probes: dict[str, list[dict]]


def deploy(req: DeployRequest, log: Log = lambda s: None, tick: Ticker = no_ticker) -> dict:
    """Export ``req.plan``, serve its tail here, run its head on ``req.edge``; the report (also written to
    ``req.out``)."""
    t_start = time.perf_counter()
    plan = load_plan(req.plan)
    edge_profile, cloud_profile, runtime, no_probe = _check_request(req, plan)
    ep, cp = load_profile(edge_profile), load_profile(cloud_profile)  # fail early on a bad name
    refs = _probe_refs(req, plan, ep, cp, no_probe)
    # the device first: an unreachable host or an unknown key is a one-line error in seconds, before the export
    dev: Device = connect(req.edge, trust_host_key=req.trust_host_key)
    try:
        bind = server_address(req.edge, req.bind)
        staged = _stage(req, plan, edge_profile, cloud_profile, runtime, refs, log, tick)
    except BaseException:
        dev.close()
        raise
    ran = _run_on_device(dev, req, staged, bind, log, tick)
    report = _report(req, dev.name, staged, ran)
    report["wall_s"] = time.perf_counter() - t_start
    # checked against its schema as it is written
    DeployReport.from_data(report, "deploy report").save(staged.out / "deploy-report.json")
    if any("prediction" in r and not r.get("fallback") for r in ran.runner["records"]):
        plot_deploy(report, staged.out / "deploy.png")
    return report


def _check_request(req: DeployRequest, plan: Plan) -> tuple[str, str, str, bool]:
    """(edge profile, cloud profile, head runtime, no speed probe on the device?) of a request, refused in one line
    where it cannot run."""
    if req.requests < 1:
        raise CpcdrlError("--requests must be at least 1")
    if req.cloud != "local":
        raise CpcdrlError(
            "--cloud: only 'local' (this machine) is supported; serve elsewhere with `cpcdrl serve` and run the edge"
            " runner by hand"
        )
    edge_profile = req.edge_profile or plan.profiles.edge
    cloud_profile = req.cloud_profile or plan.profiles.cloud
    if not edge_profile or not cloud_profile:
        raise CpcdrlError(
            f"{req.plan} names no {'edge' if not edge_profile else 'cloud'} profile: pass"
            " --edge-profile/--cloud-profile"
        )
    runtime = req.runtime or plan.runtime
    rt = get_runtime(runtime)
    head_on_device = plan.cut > 0  # at cut 0 the device runs no head: the runtime choice is moot
    if head_on_device and req.fallback and not rt.local_fallback:
        raise CpcdrlError(
            f"--fallback runs the full model in ONNX Runtime; it is not built for --runtime {rt.name} yet"
        )
    return edge_profile, cloud_profile, runtime, head_on_device and not rt.speed_probe


def _probe_refs(req: DeployRequest, plan: Plan, ep: Profile, cp: Profile, no_probe: bool) -> dict[str, dict | None]:
    """How each side's profile timed the speed probe, on each side that computes something and whose profile timed
    it (None elsewhere)."""
    n_layers, cut = plan.n_layers, plan.cut
    refs: dict[str, dict | None] = {"edge": None, "cloud": None}
    if req.probe:
        # the probe is the ONNX model the profile timed, run by ONNX Runtime: only beside heads whose runtime allows it
        refs["edge"] = probe_reference(ep, plan.model, n_layers) if cut > 0 and not no_probe else None
        refs["cloud"] = probe_reference(cp, plan.model, n_layers) if cut < n_layers else None
    return refs


def _stage(
    req: DeployRequest,
    plan: Plan,
    edge_profile: str,
    cloud_profile: str,
    runtime: str,
    refs: dict[str, dict | None],
    log: Log,
    tick: Ticker,
) -> _Staged:
    """Export the plan, pick and save the test images with the pruned PyTorch model's answers, ready the speed probe."""
    out = Path(req.out)
    export_dir = out / "export"
    original, pruned, ds = rebuild(plan, req.data, plan_path=req.plan)
    manifest = export_models(
        plan,
        original,
        pruned,
        ds,
        export_dir,
        quantize=req.quantize,
        transfer=req.transfer or plan.transfer,
        log=log,
        tick=tick,
        runtime=runtime,
    )
    # the images, and what the pruned PyTorch model says about them
    idx = subset(len(ds.test), req.requests, req.seed)
    given = DeviceInputs.pick(ds.test, idx)  # frames the device prepares itself, where they share one size
    y = ds.test.labels[idx]
    with torch.no_grad():
        torch_pred = predict(pruned, given.prepared).numpy()
    inputs = given.save(out / "inputs.npy")
    if req.probe and not any(refs.values()):  # said after the export, which fails first on a bad plan
        log("no speed probe: the profiles have no matching whole-model timing (re-profile to get one)")
    staged = _Staged(
        plan,
        edge_profile,
        cloud_profile,
        out,
        export_dir,
        manifest,
        original,
        idx,
        y,
        torch_pred,
        inputs,
        refs,
        out / "probe.onnx.gz",
    )
    if any(refs.values()):
        classes = next(r["classes"] for r in refs.values() if r is not None)
        probe_bytes, probe_shape, _ = probe_model(plan.model, classes)
        staged.probe_path.write_bytes(probe_bytes)
        staged.probe_shape = list(probe_shape)
    return staged


def _runner_args(dev: Device, req: DeployRequest, st: _Staged, remote_dir: str) -> tuple[list[str], float]:
    """Upload the head, the full model (fallback) and the speed probe; the runner's arguments and its time budget."""
    files = st.files
    args = [
        *upload_inputs(dev, st.inputs, remote_dir),
        f"--out {shlex.quote(remote_dir + '/report.json')}",
        f"--timeout {req.timeout_s:g}",
    ]
    if "head" in files:
        head_name = files["head"].file  # head.onnx or head.tflite: the runner picks the runtime by suffix
        dev.put(st.export_dir / head_name, f"{remote_dir}/{head_name}")
        args.append(f"--head {shlex.quote(remote_dir + '/' + head_name)}")
    if req.fallback:
        dev.put(st.export_dir / files["full"].file, f"{remote_dir}/full.onnx")
        args += ["--fallback local", f"--full {shlex.quote(remote_dir + '/full.onnx')}"]
    budget = 120.0 + len(st.idx) * (req.timeout_s + 5.0)
    if (ref := st.refs["edge"]) is not None:
        dev.put(PROFILER, f"{remote_dir}/timer.py")
        dev.put(st.probe_path, f"{remote_dir}/{st.probe_path.name}")
        every = max(1, math.ceil(len(st.idx) / 8))  # ~10 blocks, before, between and after the requests
        args += [
            f"--probe {shlex.quote(remote_dir + '/' + st.probe_path.name)}",
            f"--probe-shape {','.join(map(str, st.probe_shape))}",
            f"--probe-every {every}",
            f"--probe-repeats {ref['repeats']}",
            f"--probe-min-ms {ref['min_ms']:g}",
            f"--threads {ref['threads']}",
        ]
        budget += 10 * (ref["min_ms"] / 1000.0 + 10 * ref["repeats"] * ref["ms"] / 1000.0)
    return args, budget


def _run_on_device(dev: Device, req: DeployRequest, st: _Staged, bind: str, log: Log, tick: Ticker) -> _Ran:
    """Upload, serve the tail, run the requests (the speed probe beside them); stop and remove everything whatever
    happens."""
    server: CloudServer | None = None
    remote_dir = None
    token = secrets.token_urlsafe(24)
    probes: dict[str, list[dict]] = {}
    files, cloud_ref = st.files, st.refs["cloud"]
    try:
        check_runtime(dev, st.manifest.runtime.head or "onnxruntime")
        remote_dir = dev.mkdtemp()
        upload_runner(dev, remote_dir)
        args, budget = _runner_args(dev, req, st, remote_dir)
        if cloud_ref is not None:
            # before the server starts: its start-up (a Python process importing ORT) would share this host's CPUs
            probes["cloud"] = _time_probe_here(st.probe_path, st.probe_shape, cloud_ref)  # again after the requests
        if "tail" in files:
            server = CloudServer(st.export_dir, bind, token)
            log(f"cloud server {server.url} ({files['tail'].model_name})")
            args += [
                f"--url {server.url}",
                f"--model {files['tail'].model_name}",
                f"--output {files['tail'].outputs[0].name}",
            ]
        log(
            f"running {len(st.idx)} requests from {dev.name}"
            + (" with the speed probe between them" if st.refs["edge"] else "")
        )
        with count_requests(server, files, token, len(st.idx), tick):
            runner = run_edge_runner(dev, remote_dir, args, token, budget)
        server_alive = server.alive() if server else None
        if cloud_ref is not None:
            probes["cloud"] += _time_probe_here(st.probe_path, st.probe_shape, cloud_ref)
    finally:
        tear_down(dev, server, remote_dir)
    if st.refs["edge"] is not None and (runner.get("probe") or {}).get("blocks"):
        probes["edge"] = runner["probe"]["blocks"]
    return _Ran(runner, server.url if server else None, server_alive, probes)


def _measured(ok: list[dict]) -> dict:
    return {
        "e2e_ms": _pct([r["e2e_ms"] for r in ok]),
        "edge_ms": _pct([r["edge_ms"] for r in ok]),
        "transfer_and_cloud_ms": _pct([r["remote_ms"] for r in ok]),
        "server_compute_ms": _pct([r["server_compute_ms"] for r in ok if r.get("server_compute_ms") is not None]),
    }


def _protocol_overhead(ok: list[dict], measured: dict, bw: float | None) -> dict:
    """What a request costs beyond the edge's compute, the bytes at the link's rate and the server's compute (p50)."""
    per = [
        r["e2e_ms"]
        - r["edge_ms"]
        - (1000.0 * r["bytes_sent"] / bw if bw else 0.0)
        - (r.get("server_compute_ms") or 0.0)
        for r in ok
    ]
    p50 = float(np.percentile(per, 50))
    return {"p50_ms": p50, "pct_of_e2e_p50": 100.0 * p50 / measured["e2e_ms"]["p50"], "bandwidth_bytes_per_s": bw}


def _report(req: DeployRequest, edge_name: str, st: _Staged, ran: _Ran) -> dict:
    """The deploy report: answers against PyTorch, measured percentiles, the predictions and their errors."""
    plan, files, manifest, runner = st.plan, st.files, st.manifest, ran.runner
    records = runner["records"]
    ok = [r for r in records if "prediction" in r and not r.get("fallback")]
    answered = [r for r in records if "prediction" in r]
    preds = np.array([r["prediction"] for r in answered], dtype=np.int64)
    at = np.array([r["i"] for r in answered], dtype=np.int64)
    payload = int(np.median([r["bytes_sent"] for r in ok])) if ok and "tail" in files else None
    ok_ids = [r["i"] for r in ok]
    speed_probe = {
        role: _drift(blocks, ref, ok_ids if role == "edge" else None)
        for role, blocks in ran.probes.items()
        if (ref := st.refs[role])
    }
    drift = {role: d["factor"] for role, d in speed_probe.items()}
    pred = predictions(
        plan.model,
        plan.cut,
        plan.ratios,
        st.edge_profile,
        st.cloud_profile,
        payload,
        st.original,
        drift,
        plan.prune.round_to,
        manifest.runtime.head or "onnxruntime",
    )
    link = pred.pop("_link")
    measured = _measured(ok)
    # loopback has no link to charge; elsewhere the bytes go at the measured link's rate
    overhead = (
        _protocol_overhead(ok, measured, None if req.edge == "local" else link["uplink_bytes_per_s"])
        if ok and "tail" in files
        else None
    )
    errors, errors_mean = _errors(pred, measured)
    return {
        "schema_version": DeployReport.VERSION,
        "kind": DeployReport.KIND,
        "model": plan.model,
        "method": plan.method,
        "cut": plan.cut,
        "n_layers": plan.n_layers,
        "plan": str(req.plan),
        "edge": edge_name,
        "cloud": "local",
        "server": ran.server_url,
        "transfer": manifest.transfer,
        "quantize": manifest.quantize,
        "runtime": manifest.runtime.model_dump(),
        "requests": len(st.idx),
        "answered": len(answered),
        "fallbacks": runner["fallbacks"],
        "errors": runner["errors"],
        "aborted": runner["aborted"],
        "server_alive_at_end": ran.server_alive,
        "warmup_requests": runner["warmup"],
        "inputs": runner.get("inputs"),
        "accuracy_pct": float((preds == st.y[at]).mean() * 100.0) if len(preds) else None,
        "agreement_with_pytorch_pct": float((preds == st.torch_pred[at]).mean() * 100.0) if len(preds) else None,
        "bytes_per_request": payload,
        "measured": measured,
        "protocol_overhead": overhead,
        "speed_probe": speed_probe,  # per side: the reference model's time now vs in the profile
        "predicted": pred,
        "prediction_error_pct": errors,  # (predicted - measured p50) / measured p50
        "prediction_error_vs_mean_pct": (
            errors_mean
        ),  # against the measured mean: what sustained-mean tables predict under a CPU quota
        "plan_estimate_ms": plan.latency_ms,
        "profiles": {"edge": st.edge_profile, "cloud": st.cloud_profile},
        "records": records,
    }


def _errors(pred: dict, measured: dict) -> tuple[dict, dict]:
    """(predicted - measured) / measured in percent, against the p50 and against the mean."""
    if not measured["e2e_ms"]:
        return {}, {}
    m, mean = measured["e2e_ms"]["p50"], measured["e2e_ms"]["mean"]
    return {k: 100.0 * (v["total_ms"] - m) / m for k, v in pred.items()}, {
        k: 100.0 * (v["total_ms"] - mean) / mean for k, v in pred.items()
    }


def repredict(report_path: Path) -> dict:
    """Recompute a deploy report's predictions with today's latency models (the measurements stay)."""
    rep: DeployReport = DeployReport.load(report_path, "deploy report")
    sp = rep.speed_probe
    e = sp.get("edge")
    if e is not None:  # the factor from the probe blocks the way deploy computes it today
        blocks = [{"before_request": b, "mean_ms": m} for b, m in zip(e["block_before_request"], e["block_means_ms"])]
        ids = [r["i"] for r in rep.records if "prediction" in r and not r.get("fallback")]
        sp["edge"] = _drift(blocks, {"ms": e["reference_ms"], "profiled_at": e["profiled_at"]}, ids)
    drift = {role: d["factor"] for role, d in sp.items()}
    plan = load_plan(Path(rep.plan))
    pred = predictions(
        plan.model,
        plan.cut,
        plan.ratios,
        rep.profiles.edge,
        rep.profiles.cloud,
        rep.bytes_per_request,
        drift=drift,
        round_to=plan.prune.round_to,
        edge_runtime=rep.runtime.head or "onnxruntime",
    )
    pred.pop("_link")
    rep.predicted = pred
    rep.prediction_error_pct, rep.prediction_error_vs_mean_pct = _errors(pred, rep.measured)
    rep.save(report_path)
    report = rep.to_data()
    if rep.measured["e2e_ms"]:
        plot_deploy(report, Path(report_path).parent / "deploy.png")
    return report


def plot_deploy(report: dict, path: Path) -> None:
    """Left: every request's end-to-end latency (sorted). Right: measured p50 split vs the predictions."""
    from cpcdrl_deploy.core.plotting import plt, save_figure

    ok = [r for r in report["records"] if "prediction" in r and not r.get("fallback")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    e2e = sorted(r["e2e_ms"] for r in ok)
    ax1.plot(np.arange(1, len(e2e) + 1) / len(e2e) * 100.0, e2e, "k-")
    for k, v in report["predicted"].items():
        ax1.axhline(
            v["total_ms"],
            ls={
                "table": "--",
                "table_sum": (0, (1, 1)),
                "table_median": "-.",
                "table_quota": "-",
                "table_drift": "-",
            }.get(k, ":"),
            color={"table": "b", "table_sum": "c", "table_median": "g", "table_quota": "m", "table_drift": "k"}.get(
                k, "r"
            ),
            label=f"{k} prediction",
        )
    ax1.set_xlabel("requests (%)")
    ax1.set_ylabel("end-to-end latency (ms)")
    ax1.set_title("measured, every request")
    if report["predicted"]:
        ax1.legend(fontsize=8)
    m = report["measured"]
    bars = {"measured p50": (m["edge_ms"]["p50"], m["transfer_and_cloud_ms"].get("p50", 0.0))}
    for k, v in report["predicted"].items():
        bars[k] = (v["edge_ms"], v["transfer_ms"] + v["cloud_ms"] + v["return_ms"])
    names = list(bars)
    edge = [bars[n][0] for n in names]
    rest = [bars[n][1] for n in names]
    ax2.bar(names, edge, label="edge compute", color="tab:green")
    ax2.bar(names, rest, bottom=edge, label="transfer + cloud", color="tab:blue")
    ax2.set_ylabel("ms")
    ax2.set_title("p50 split vs predictions")
    ax2.legend(fontsize=8)
    fig.suptitle(
        f"{report['model']} {report['method']} cut {report['cut']}/{report['n_layers']} on {report['edge']}"
        f" ({report['transfer']})"
    )
    save_figure(fig, path)


def summary_lines(report: dict) -> list[str]:
    m = report["measured"]
    lines = [
        f"{report['model']} {report['method']} cut {report['cut']}/{report['n_layers']}:"
        f" {report['answered']}/{report['requests']} answered"
        + (f", {report['fallbacks']} locally (fallback)" if report["fallbacks"] else "")
        + (f"; ABORTED: {report['aborted']}" if report["aborted"] else "")
    ]
    if report["accuracy_pct"] is not None:
        lines.append(
            f"accuracy {report['accuracy_pct']:.2f} %, agreement with pruned PyTorch"
            f" {report['agreement_with_pytorch_pct']:.2f} %"
        )
    if (given := report.get("inputs") or {}).get("given") == "frames":
        shape = "x".join(str(v) for v in given["shape"][1:3])
        lines.append(f"images: {shape} frames prepared on the device, {given['prepare_ms_per_frame']:.2f} ms each")
    if m["e2e_ms"]:
        e = m["e2e_ms"]
        lines.append(
            f"end to end p50 {e['p50']:.2f} ms, p90 {e['p90']:.2f}, p99 {e['p99']:.2f}, mean {e['mean']:.2f} (edge p50"
            f" {m['edge_ms']['p50']:.2f} ms, transfer+cloud p50 {m['transfer_and_cloud_ms'].get('p50', 0.0):.2f} ms)"
        )
    for k, v in report["predicted"].items():
        lines.append(
            f"{k} prediction {v['total_ms']:.2f} ms [{v['model']}] (error vs p50"
            f" {report['prediction_error_pct'].get(k, float('nan')):+.1f} %, vs mean"
            f" {report['prediction_error_vs_mean_pct'].get(k, float('nan')):+.1f} %)"
        )
    for role, d in (report.get("speed_probe") or {}).items():
        lines.append(
            f"speed probe, {role}: the whole model took {d['median_ms']:.2f} ms now, {d['reference_ms']:.2f} ms when"
            f" profiled (x{d['factor']:.3f}; blocks {min(d['block_means_ms']):.2f}-{max(d['block_means_ms']):.2f} ms)"
        )
    if report["protocol_overhead"]:
        o = report["protocol_overhead"]
        lines.append(f"protocol overhead p50 {o['p50_ms']:.2f} ms = {o['pct_of_e2e_p50']:.1f} % of end to end")
    return lines
