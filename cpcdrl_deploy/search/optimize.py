"""``cpcdrl optimize``: set up data, profiles and evaluator, run the methods, write plans.

The accuracy constraint. Search scores plans on a validation split of the
*training* images (the test images stay unseen until the end); a network
scores higher on images it was trained on, so A0 is carried over as a loss:
``--max-accuracy-loss D`` means "at most D points below the unpruned model",
applied on the validation split during search and reported on the test split
at the end; ``--accuracy A0`` is turned into D = (unpruned test accuracy - A0).
"""

from __future__ import annotations

import hashlib
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cpcdrl_deploy import __version__
from cpcdrl_deploy.compress.pruning import Calibration, PlanShape, PruneConfig, channel_groups, plan_shape, prune
from cpcdrl_deploy.compress.transfer import check_transfer, lossy_at
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.fileio import atomic_write_bytes
from cpcdrl_deploy.core.progress import Ticker, no_ticker
from cpcdrl_deploy.measure.latency import FastestRuntime, LatencyModel, build_latency_model, edge_runtimes, link_fields
from cpcdrl_deploy.measure.profile import LinkProfile, Profile, load_profile
from cpcdrl_deploy.measure.runtimes import get_runtime
from cpcdrl_deploy.models.data import ImageData, load_images, search_split, subset
from cpcdrl_deploy.models.evaluate import accuracy_on, check_classes
from cpcdrl_deploy.models.graph import ModelAnalysis, analyze
from cpcdrl_deploy.models.zoo import UnitModel, file_sha256, get_entry, load_model, preprocess_for
from cpcdrl_deploy.search.accuracy_cache import AccuracyCache, CachedScore, context_key, tensor_digest
from cpcdrl_deploy.search.evaluator import Evaluation, PlanEvaluator
from cpcdrl_deploy.search.methods import METHODS, SEARCHES, Callbacks, SearchConfig, SearchResult
from cpcdrl_deploy.search.plan import (
    Plan,
    PlanAccuracy,
    PlanData,
    PlanMacs,
    PlanPreprocess,
    PlanProfiles,
    PlanPrune,
    PlanRecord,
    PlanWeights,
)
from cpcdrl_deploy.search.result import OptimizeResult, UnprunedAccuracy

Log = Callable[[str], None]


@dataclass
class OptimizeRequest:
    model: str
    checkpoint: Path
    data: str
    edge: str = "paper"
    cloud: str = "paper"
    link: str | None = None
    bandwidth_bytes_per_s: float | None = None  # what-if: overrides the link's rate both ways
    rtt_ms: float | None = None  # what-if: overrides the link's round-trip time
    accuracy: float | None = None  # A0 on the test scale, percent
    max_accuracy_loss: float | None = None  # D, points
    methods: tuple[str, ...] = ("cpcdrl",)
    val_size: int = 2000
    calib_size: int = 256
    test_limit: int | None = None
    search: SearchConfig = field(default_factory=SearchConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    cache: Path | None = None  # persistent accuracy cache directory (None: off)
    keep_models: bool = (
        False  # return each chosen plan's pruned, refitted module (result["models"]) to save beside the plan
    )
    # where validation images come from: "train" (images the network was trained on) or "test" (half of the
    # test split, unseen in training; the final test accuracy is then taken on the other half)
    val_source: str = "train"
    transfer: str = (
        "fp32"  # the cut tensor's encoding on the wire (wire.py), priced and simulated; export uses the plan's
    )
    # the head's runtime on the device: "auto" prices each plan with every runtime the edge profile has tables for
    # and takes the faster (latency.FastestRuntime); export and deploy use the plan's
    edge_runtime: str = "auto"
    device: str = (
        "cpu"  # where refits and accuracy run ("cuda" on a GPU host); plans do not depend on it beyond float rounding
    )


def _validate(req: OptimizeRequest) -> None:
    if (req.accuracy is None) == (req.max_accuracy_loss is None):
        raise CpcdrlError("give exactly one of --accuracy A0 or --max-accuracy-loss D")
    if req.max_accuracy_loss is not None and req.max_accuracy_loss < 0:
        raise CpcdrlError("--max-accuracy-loss must be >= 0")
    check_transfer(req.transfer)
    if req.search.episodes < 1:
        raise CpcdrlError("--episodes must be at least 1")
    bad = [m for m in req.methods if m not in METHODS]
    if bad:
        raise CpcdrlError(f"unknown method {bad[0]!r}; known: {', '.join(METHODS)}, all")
    if not 0.0 < req.search.r_min <= 1.0:
        raise CpcdrlError("--r-min must be in (0, 1]")
    try:
        dev = torch.device(req.device)
    except RuntimeError:
        raise CpcdrlError(f"--device {req.device!r}: expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CpcdrlError(f"--device {req.device}: no CUDA device on this host")
    if dev.type not in ("cpu", "cuda"):
        raise CpcdrlError(f"--device {req.device!r}: expected cpu, cuda or cuda:N")


@dataclass
class Session:
    """Everything a search needs, loaded once; several constraints can reuse it (and its cache)."""

    req: OptimizeRequest
    model: UnitModel
    analysis: ModelAnalysis
    groups: list
    data: ImageData
    test_idx: np.ndarray
    evaluator: PlanEvaluator
    latency_desc: str
    base_val: float
    base_test: float
    checkpoint_sha: str
    t_start: float
    test_store: AccuracyCache | None = None


def _note_class_count(model: str, edge_p: Profile, cloud_p: Profile, classes: int, log: Log) -> None:
    """Say so where a profile timed the model's last layer at another class count than the checkpoint's."""
    for side, prof in (("edge", edge_p), ("cloud", cloud_p)):
        timed = prof.tables.get(model)
        if timed is not None and timed.classes not in (None, classes):
            log(
                f"note: the {side} profile timed {model} with {timed.classes} classes, this checkpoint has"
                f" {classes}: its last layer is priced as timed (profile again with --classes {classes})"
            )


def prepare(req: OptimizeRequest, log: Log = lambda s: None, tick: Ticker = no_ticker) -> Session:
    """Load model, profiles and data; measure the unpruned model on validation and test images."""
    _validate(req)
    t_start = time.perf_counter()
    entry = get_entry(req.model)
    edge_p, cloud_p = load_profile(req.edge), load_profile(req.cloud)
    link_p = what_if_link(
        load_profile(req.link).link if req.link else (edge_p.link or cloud_p.link),
        req.bandwidth_bytes_per_s,
        req.rtt_ms,
    )
    latency_model = _latency_model(req, edge_p, cloud_p, link_p, log)
    model = load_model(req.model, req.checkpoint)
    torch.manual_seed(req.search.seed)
    analysis = analyze(model, entry.input_size, req.model)
    groups = channel_groups(model, analysis)
    if torch.device(req.device).type == "cuda":
        # full float32 on the GPU (no TF32), so that accuracies match a CPU run up to float rounding
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        model = model.to(req.device)
    data = load_images(req.data, preprocess_for(req.model))
    check_classes(model, data, req.model)
    _note_class_count(req.model, edge_p, cloud_p, len(data.classes), log)
    val_idx, calib_idx = search_split(len(data.train), req.val_size, req.calib_size, req.search.seed)
    test_idx = subset(len(data.test), req.test_limit, req.search.seed)
    val_set = data.train
    if req.val_source == "test":
        # validation from unseen images: half of a seeded shuffle of the test split, the final test on the other half
        if len(data.test) < 2:
            raise CpcdrlError("--val-source test needs at least two test images")
        perm = np.random.default_rng(req.search.seed + 7).permutation(len(data.test))
        half = min(req.val_size, len(data.test) // 2)
        val_idx, rest = np.sort(perm[:half]), np.sort(perm[half:])
        test_idx = rest[subset(len(rest), req.test_limit, req.search.seed)]
        val_set = data.test
    elif req.val_source != "train":
        raise CpcdrlError(f"--val-source {req.val_source!r}: expected train or test")
    log(
        f"{req.model}: {analysis.n_layers} layers, {len(analysis.cuttable_points())} cuts; "
        f"{len(val_idx)} validation, {len(calib_idx)} calibration, {len(test_idx)} test images ({data.source})"
    )
    val_x, val_y = _shuffled(*val_set.tensors(val_idx), req.search.seed)
    calib = (
        Calibration(data.train.tensors(calib_idx)[0], req.prune.points_per_image, req.search.seed)
        if req.prune.refit
        else None
    )
    sha = file_sha256(req.checkpoint)
    val_store, test_store = _stores(req, sha, val_x, val_y, calib, data.test.digest(test_idx))
    base_test = _cached_test_accuracy(
        test_store,
        0,
        (),
        len(test_idx),
        lambda: accuracy_on(
            model, data.test, test_idx, progress=lambda d, t: tick("unpruned model, test images", d, t)
        ),
    )
    evaluator = PlanEvaluator(
        model, analysis, groups, latency_model, val_x, val_y, calib, req.prune, store=val_store, transfer=req.transfer
    )
    base_val = evaluator.evaluate(analysis.n_layers, [1.0] * analysis.n_layers).accuracy
    return Session(
        req,
        model,
        analysis,
        groups,
        data,
        test_idx,
        evaluator,
        latency_model.describe(),
        base_val,
        base_test,
        sha,
        t_start,
        test_store,
    )


def _shuffled(x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation images in a seeded random order.

    The evaluator scores them in chunks and stops a plan early, or screens
    it, on the first chunks alone (``score_in_chunks``). An ImageFolder
    lists its images class by class, so sorted indices made each chunk a
    few classes: the reference camera model's unpruned accuracy on four
    such runs of test images read 84.0, 69.6, 79.55 and 88.5 %, and a
    plan was judged against A0 on whichever classes came first.
    """
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    return x[order], y[order]


def set_link_rate(session: Session, rate: float, log: Log = lambda s: None) -> Session:
    """The session with its link's rate replaced (both ways), priced anew; the evaluator's accuracies stay shared.

    A plan set searches one session at several rates (``planset.py``): what
    a plan scores does not depend on the link, so every search reuses every
    accuracy measured before it.
    """
    req = replace(session.req, bandwidth_bytes_per_s=rate)
    edge_p, cloud_p = load_profile(req.edge), load_profile(req.cloud)
    base = load_profile(req.link).link if req.link else (edge_p.link or cloud_p.link)
    lm = _latency_model(req, edge_p, cloud_p, what_if_link(base, rate, req.rtt_ms), log)
    return replace(session, req=req, evaluator=replace(session.evaluator, latency_model=lm), latency_desc=lm.describe())


def _latency_model(req: OptimizeRequest, edge_p, cloud_p, link_p, log: Log) -> LatencyModel:
    """The profiles' latency model, with the edge runtime(s) the request allows (``edge_runtime``)."""
    if req.edge_runtime == "auto":
        runtimes = edge_runtimes(edge_p, req.model) or [
            "onnxruntime"
        ]  # none: ONNX Runtime's missing table is the error to show
        able = [r for r in runtimes if req.transfer in get_runtime(r).transfers]
        if able != runtimes:
            # none left: ONNX Runtime's missing table is again the error to show
            log(
                f"{', '.join(r for r in runtimes if r not in able)} heads cannot send --transfer {req.transfer}:"
                " pricing the others"
            )
            runtimes = able or ["onnxruntime"]
    else:
        rt = get_runtime(req.edge_runtime)
        if req.transfer not in rt.transfers:
            raise CpcdrlError(
                f"--edge-runtime {rt.name} builds fp32 heads with an fp32 wire only; drop --transfer {req.transfer} or"
                " use onnxruntime"
            )
        runtimes = [req.edge_runtime]
    if len(runtimes) == 1:
        return build_latency_model(edge_p, cloud_p, link_p, runtimes[0])
    return FastestRuntime({r: build_latency_model(edge_p, cloud_p, link_p, r) for r in runtimes})


def plan_runtime(latency_model: LatencyModel, model: str, shape: PlanShape) -> str:
    """The edge runtime a plan's head is priced with (ONNX Runtime where nothing runs on the edge or the model does
    not say)."""
    if shape.cut == 0:
        return "onnxruntime"
    if isinstance(latency_model, FastestRuntime):
        return latency_model.runtime_for(model, shape)
    return getattr(latency_model, "edge_runtime", "onnxruntime")


def _stores(
    req: OptimizeRequest, sha: str, val_x, val_y, calib: Calibration | None, test_digest: str
) -> tuple[AccuracyCache | None, AccuracyCache | None]:
    """The persistent accuracy caches of this model, pruning set-up and image sets (validation, test); None when
    disabled."""
    if req.cache is None:
        return None, None
    common = {
        "model": req.model,
        "checkpoint_sha256": sha,
        "prune": asdict(req.prune),
        "seed": req.search.seed,
        "calibration": tensor_digest(calib.images) if calib is not None else None,
        "device": torch.device(req.device).type,
    }
    if req.transfer != "fp32":  # a lossy wire scores differently; fp32 keeps the keys it always had
        common["transfer"] = req.transfer
    val = AccuracyCache(
        req.cache, context_key(split="validation", images=tensor_digest(val_x, val_y), chunk=500, **common)
    )
    tst = AccuracyCache(req.cache, context_key(split="test", images=test_digest, **common))
    return val, tst


def _cached_test_accuracy(
    store: AccuracyCache | None, cut: int, out_keep: tuple, n: int, score: Callable[[], float]
) -> float:
    """Top-1 (percent) on ``n`` test images from the persistent cache, else ``score()``, stored as one chunk."""
    hit = store.get(cut, out_keep) if store is not None else None
    if hit is not None and hit.chunk_sizes == (n,):
        return 100.0 * hit.chunk_correct[0] / n
    acc = score()
    if store is not None:
        store.put(cut, out_keep, CachedScore((int(round(acc * n / 100.0)),), (n,)))
    return acc


def what_if_link(
    link: LinkProfile | None, bandwidth_bytes_per_s: float | None, rtt_ms: float | None
) -> LinkProfile | None:
    """The link with its rate (both ways) and/or RTT replaced: "what if the Pi moved to Wi-Fi", without re-profiling."""
    if bandwidth_bytes_per_s is None and rtt_ms is None:
        return link
    if bandwidth_bytes_per_s is not None and not bandwidth_bytes_per_s > 0:
        raise CpcdrlError("--bandwidth must be > 0")
    if rtt_ms is not None and not rtt_ms >= 0:
        raise CpcdrlError("--rtt must be >= 0")
    base = link or LinkProfile(uplink_bytes_per_s=1.0, downlink_bytes_per_s=1.0)
    return base.model_copy(
        update={
            "uplink_bytes_per_s": bandwidth_bytes_per_s or base.uplink_bytes_per_s,
            "downlink_bytes_per_s": bandwidth_bytes_per_s or base.downlink_bytes_per_s,
            "rtt_ms": base.rtt_ms if rtt_ms is None else rtt_ms,
        }
    )


def constraint_loss(session: Session, accuracy: float | None, max_loss: float | None) -> float:
    """D, the accuracy points the plan may lose; refuses an A0 above the unpruned model's."""
    loss = max_loss if max_loss is not None else session.base_test - float(accuracy)  # type: ignore[arg-type]
    if loss < 0:
        raise CpcdrlError(
            f"--accuracy {accuracy}% is above what even the unpruned model reaches ({session.base_test:.2f}% on"
            f" {len(session.test_idx)} test images)"
        )
    return loss


def optimize(req: OptimizeRequest, log: Log = lambda s: None, tick: Ticker = no_ticker) -> OptimizeResult:
    """Run the requested methods: each one's plan, its rewards and history, the timers.

    ``log`` gets milestones, ``tick`` counters: each method's proposals, then the test images.
    """
    session = prepare(req, log, tick)
    return run_methods(session, constraint_loss(session, req.accuracy, req.max_accuracy_loss), log, tick=tick)


def _search_all(
    session: Session, a0_val: float, log: Log, tick: Ticker, t_start: float
) -> tuple[list[SearchResult], bool]:
    """Every requested method's result, and whether Ctrl-C cut the run short (each method's best so far then)."""
    req, evaluator = session.req, session.evaluator
    results: list[SearchResult] = []
    live: list[SearchResult] = []
    interrupted = False
    try:
        # run the RL method first so random search can match its evaluation count
        for m in sorted(req.methods, key=lambda x: 0 if x == "cpcdrl" else 1):
            log(f"[{m}] started ({time.perf_counter() - t_start:.0f} s so far)")
            results.append(SEARCHES[m](evaluator, a0_val, req.search, Callbacks(log, tick, live), list(results)))
            if results[-1].method in ("cpcdrl", "cpcdrl-paper", "edge-pruned", "random", "greedy"):
                b = results[-1].best
                log(
                    f"[{m}] done: {results[-1].evaluations} plans scored; best feasible "
                    + (f"{b.latency.total_ms:.1f} ms" if b else "none")
                )
    except KeyboardInterrupt:
        # Ctrl-C: keep what was found, the finished methods and the best plan so far of the one running
        interrupted = True
        finished = {id(r) for r in results}
        results += [r for r in live if id(r) not in finished]
        log("interrupted: reporting each method's best plan so far (test accuracy not measured)")

    return results, interrupted


def run_methods(
    session: Session,
    loss: float,
    log: Log = lambda s: None,
    early_stop_a0: float | None = None,
    tick: Ticker = no_ticker,
) -> OptimizeResult:
    """Search under "at most ``loss`` points below the unpruned model" with every requested method."""
    req, analysis, evaluator = session.req, session.analysis, session.evaluator
    t_start = time.perf_counter()
    base_val, base_test = session.base_val, session.base_test
    a0_val = base_val - loss
    evaluator.a0 = a0_val if early_stop_a0 is None else early_stop_a0
    log(
        f"unpruned: {base_test:.2f}% test, {base_val:.2f}% validation; constraint: at most {loss:.2f} points lost (A0 ="
        f" {a0_val:.2f}% on validation)"
    )

    results, interrupted = _search_all(session, a0_val, log, tick, t_start)
    plans, models = test_and_record(session, results, loss, a0_val, interrupted, tick)
    wall = time.perf_counter() - t_start
    for p in plans:
        p.wall_s = wall
    result = OptimizeResult(
        model=req.model,
        interrupted=interrupted,
        a0_test=base_test - loss,
        a0_validation=a0_val,
        max_accuracy_loss=loss,
        unpruned=UnprunedAccuracy(validation=base_val, test=base_test),
        latency_model=session.latency_desc,
        link=link_fields(evaluator.latency_model),
        # what cut 0 sends (the image, in the wire's encoding): what a split's cut tensor is weighed against
        input_bytes=plan_shape(analysis, session.groups, 0, [], transfer=req.transfer).cut_bytes,
        unpruned_channels=[layer.out_channels for layer in analysis.layers],
        plans=plans,
        rewards={r.method: r.rewards for r in results if r.rewards},
        history={r.method: r.history for r in results},
        timers=evaluator.timers.to_dict(),
        wall_s=wall,
        since_start_s=time.perf_counter() - session.t_start,
    )
    result.models.update(models)
    return result


def test_and_record(
    session: Session,
    results: list[SearchResult],
    loss: float,
    a0_val: float,
    interrupted: bool = False,
    tick: Ticker = no_ticker,
) -> tuple[list[PlanRecord], dict[str, torch.nn.Module]]:
    """Each search's outcome as a plan record, its best plan scored on the test images (unless interrupted); with
    ``keep_models``, each best plan's pruned, refitted network by method."""
    req = session.req
    plans: list[PlanRecord] = []
    test_cache: dict[tuple, float] = {}
    # with keep_models: each chosen plan pruned and refitted once, for its test score and for saving
    nets: dict[tuple, torch.nn.Module] = {}

    def net_of(ev: Evaluation) -> torch.nn.Module:
        key = (ev.cut, ev.shape.out_keep[: ev.cut])
        if key not in nets:
            net = _pruned_net(session, ev)
            if not req.keep_models:
                return net
            nets[key] = net
        return nets[key]

    tick("plans on the test images", 0, len(results))
    for i, res in enumerate(results):
        plan = _plan_record(session, res, loss, a0_val)
        if res.best is not None and not interrupted:
            key = (res.best.cut, res.best.shape.out_keep[: res.best.cut])
            if key not in test_cache:
                test_cache[key] = plan_test_accuracy(session, res.best, net_of)
            plan.accuracy.test = test_cache[key]
            plan.accuracy.meets_a0_on_test = test_cache[key] >= session.base_test - loss
        plans.append(plan)
        tick("plans on the test images", i + 1, len(results))
    models = {}
    if req.keep_models and not interrupted:
        models = {res.method: net_of(res.best) for res in results if res.best is not None}
    return plans, models


def _pruned_net(session: Session, ev: Evaluation) -> torch.nn.Module:
    """The plan's network, pruned and refitted exactly as in the search (the unpruned model where nothing is pruned)."""
    if not any(f < 1.0 for f in ev.shape.out_keep):
        return session.model
    e = session.evaluator
    return prune(
        session.model, session.analysis, ev.cut, list(ev.ratios), e.calibration, e.prune_config, session.groups
    ).model


def plan_test_accuracy(
    session: Session, ev: Evaluation, net_of: Callable[[Evaluation], torch.nn.Module] | None = None
) -> float:
    """The chosen plan's top-1 on the test images; ``net_of`` builds its network (default ``_pruned_net``)."""
    e = session.evaluator
    if not any(f < 1.0 for f in ev.shape.out_keep) and not lossy_at(ev.cut, session.analysis.n_layers, e.transfer):
        return session.base_test  # the unpruned model, already scored on these images in prepare()
    t0 = time.perf_counter()

    def score() -> float:
        net = net_of(ev) if net_of is not None else _pruned_net(session, ev)
        return accuracy_on(e.on_wire(net, ev.cut), session.data.test, session.test_idx)

    acc = _cached_test_accuracy(session.test_store, ev.cut, ev.shape.out_keep[: ev.cut], len(session.test_idx), score)
    e.timers.test_s += time.perf_counter() - t0
    return acc


def _plan_record(session: Session, res: SearchResult, loss: float, a0_val: float) -> PlanRecord:
    """A method's outcome as a plan document: its best feasible plan, or ``feasible: false``."""
    req, analysis, b = session.req, session.analysis, res.best
    record = PlanRecord(
        cpcdrl_version=__version__,
        model=req.model,
        checkpoint=str(req.checkpoint),
        checkpoint_sha256=session.checkpoint_sha,
        method=res.method,
        feasible=b is not None,
        profiles=PlanProfiles(
            edge=req.edge,
            cloud=req.cloud,
            link=req.link,
            bandwidth_bytes_per_s=req.bandwidth_bytes_per_s,
            rtt_ms=req.rtt_ms,
        ),
        latency_model=session.latency_desc,
        accuracy=PlanAccuracy(
            a0_test=session.base_test - loss,
            a0_validation=a0_val,
            max_accuracy_loss=loss,
            unpruned_validation=session.base_val,
            unpruned_test=session.base_test,
            validation=b.accuracy if b else None,
            validation_images=b.images if b else None,
        ),
        seed=req.search.seed,
        # what `cpcdrl export` needs to rebuild the same pruned, refitted weights
        data=PlanData(
            source=str(req.data), val_size=req.val_size, calib_size=req.calib_size, val_source=req.val_source
        ),
        preprocess=PlanPreprocess.of(req.model),
        episodes=res.episodes,
        evaluations=res.evaluations,
        search_s=res.wall_s,
        host=platform.node(),
    )
    if b is None:
        return record
    # the record's fields (a feasible plan's own are None there) and what the best plan sets
    return Plan(
        **record.model_dump(exclude_unset=True, exclude={"kind", "schema_version", "feasible"}),
        feasible=True,
        cut=b.cut,
        cut_name=analysis.points[b.cut].name,
        n_layers=analysis.n_layers,
        ratios=[round(r, 6) for r in b.ratios],
        channels=plan_channels(analysis, b.shape),
        latency_ms=b.latency.to_dict(),
        macs=PlanMacs(
            edge=b.shape.edge_macs,
            cloud=b.shape.cloud_macs,
            total=b.shape.edge_macs + b.shape.cloud_macs,
            unpruned=analysis.total_macs,
        ),
        cut_bytes=b.shape.cut_bytes,
        transfer=req.transfer,
        runtime=plan_runtime(session.evaluator.latency_model, req.model, b.shape),
        prune=PlanPrune(
            importance=req.prune.importance,
            round_to=req.prune.round_to,
            refit=req.prune.refit,
            calibration_images=req.calib_size,
        ),
    )


def plan_channels(analysis: ModelAnalysis, shape: PlanShape) -> list[int]:
    """Output channels each layer keeps under ``shape`` (what a plan records and export checks)."""
    return [max(1, int(round(layer.out_channels * k))) for layer, k in zip(analysis.layers, shape.out_keep)]


def uniform_plan(
    model: str,
    cut: int,
    keep: float,
    checkpoint: str | Path | None = None,
    data: str = "builtin",
    val_size: int = 2000,
    calib_size: int = 256,
) -> Plan:
    """A plan for a given cut and one keep ratio, without search or accuracy measurement.

    For tests, benchmarks and "what if" deployments; ``feasible`` is asserted,
    not measured, so its accuracy fields stay empty.
    """
    from cpcdrl_deploy.models.zoo import resolve_checkpoint

    ckpt = resolve_checkpoint(model, checkpoint, required=True)
    if ckpt is None:
        raise CpcdrlError(f"no checkpoint for {model}")
    net = load_model(model, ckpt)
    a = analyze(net, get_entry(model).input_size, model)
    cfg = PruneConfig()
    shape = plan_shape(a, channel_groups(net, a), cut, [keep] * cut, cfg.round_to)
    return Plan(
        cpcdrl_version=__version__,
        model=model,
        checkpoint=str(ckpt),
        checkpoint_sha256=file_sha256(ckpt),
        method="uniform",
        feasible=True,
        profiles=PlanProfiles(edge="paper", cloud="paper"),
        data=PlanData(source=str(data), val_size=val_size, calib_size=calib_size),
        preprocess=PlanPreprocess.of(model),
        cut=cut,
        cut_name=a.points[cut].name,
        n_layers=a.n_layers,
        ratios=[keep] * cut,
        channels=plan_channels(a, shape),
        latency_ms={"edge_ms": 0.0, "transfer_ms": 0.0, "cloud_ms": 0.0, "return_ms": 0.0, "total_ms": 0.0},
        cut_bytes=shape.cut_bytes,
        prune=PlanPrune(
            importance=cfg.importance, round_to=cfg.round_to, refit=cfg.refit, calibration_images=calib_size
        ),
    )


def write_plan(path: str | Path, plan: PlanRecord, model: torch.nn.Module | None = None) -> Path:
    """The plan, and with ``model`` its pruned, refitted weights beside it (``<name>.weights.pt``, SHA-256 in the plan).

    Export and deploy then load those very weights instead of replaying the
    refit. The weights go first: a plan never names a file that is not there.
    """
    path = Path(path)
    if model is not None:
        import io

        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
        data = buf.getvalue()
        wpath = path.with_name(path.stem + ".weights.pt")
        atomic_write_bytes(wpath, data)
        plan = plan.model_copy(
            update={"weights": PlanWeights(file=wpath.name, sha256=hashlib.sha256(data).hexdigest())}
        )
    return plan.save(path)
