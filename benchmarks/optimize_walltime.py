"""Wall time of `cpcdrl optimize` (CPCDRL only) and where it goes.

    python benchmarks/optimize_walltime.py                 # CIFAR VGG16, 300 episodes, CLI defaults
    python benchmarks/optimize_walltime.py --model mobilenet --episodes 30
    python benchmarks/optimize_walltime.py --model mobilenet_v2:96 --episodes 100   # the camera-resolution reference
    python benchmarks/optimize_walltime.py --compare-scoring 8   # eager vs fastcpu.scoring_copy, side by side
    python benchmarks/optimize_walltime.py --log-plans plans.json  # also record every plan the search scored
    python benchmarks/optimize_walltime.py --replay plans.json --replay-plans 60   # rescore them, eager vs copy

Runs what `cpcdrl optimize vgg16 --method cpcdrl --episodes 300 --max-accuracy-loss 2`
runs (same defaults: 2,000 validation images, 256 calibration images, all
10,000 test images, the `paper` profiles) and splits its wall time into
loading + unpruned baselines, refit (pruning surgery + least-squares
reconstruction), accuracy evaluation, agent updates and the rest. Run it on
an otherwise idle machine: it is a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cpcdrl_deploy.compress.pruning import prune
from cpcdrl_deploy.core.fileio import atomic_write_json, portable_args
from cpcdrl_deploy.models.evaluate import predict
from cpcdrl_deploy.models.scoring import scoring_copy
from cpcdrl_deploy.search import evaluator as env
from cpcdrl_deploy.search.evaluator import PlanEvaluator, Timers
from cpcdrl_deploy.search.methods import SearchConfig
from cpcdrl_deploy.search.optimize import OptimizeRequest, prepare, run_methods

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _shared_checkpoint(model: str) -> Path:
    """The reference checkpoint in ../shared for a model key: NAME-cifar10.pth, NAME-SIZEpx-cifar10.pth for a size."""
    name, _, size = model.partition(":")
    return SHARED / "models" / (f"{name}-{size}px-cifar10.pth" if size else f"{name}-cifar10.pth")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg16", help="a model key (zoo name, optionally NAME:SIZE)")
    ap.add_argument(
        "--checkpoint",
        default=None,
        help="default: ../shared/models/NAME-cifar10.pth, or NAME-SIZEpx-cifar10.pth for NAME:SIZE",
    )
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--loss", type=float, default=2.0, help="accuracy points the plan may lose")
    ap.add_argument("--val-size", type=int, default=OptimizeRequest.val_size)
    ap.add_argument("--data", default=str(SHARED / "datasets" / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--goal-min", type=float, default=10.0, help="the wall-time goal the report names (issue 38: 15)")
    ap.add_argument("--out", default=None, help="write the figures as JSON here too")
    ap.add_argument(
        "--compare-scoring",
        type=int,
        default=0,
        metavar="PLANS",
        help="instead: time scoring PLANS random pruned plans eagerly and with fastcpu.scoring_copy, interleaved",
    )
    ap.add_argument(
        "--log-plans",
        default=None,
        metavar="FILE",
        help="write every plan the search pruned and scored, in order, here",
    )
    ap.add_argument(
        "--replay",
        default=None,
        metavar="FILE",
        help=(
            "instead: rescore the plans of a --log-plans file in order, eagerly and with the scoring copy, in"
            " alternating blocks"
        ),
    )
    ap.add_argument("--replay-plans", type=int, default=60, help="how many of them (default 60)")
    args = ap.parse_args()
    log = lambda s: print(s, file=sys.stderr, flush=True)
    req = OptimizeRequest(
        model=args.model,
        checkpoint=Path(args.checkpoint) if args.checkpoint else _shared_checkpoint(args.model),
        data=args.data,
        max_accuracy_loss=args.loss,
        methods=("cpcdrl",),
        val_size=args.val_size,
        search=SearchConfig(episodes=args.episodes, seed=args.seed),
    )
    if args.compare_scoring:
        return compare_scoring(req, args.compare_scoring, args.seed, log)
    if args.replay:
        return replay(req, Path(args.replay), args.replay_plans, args.out, log)
    t0 = time.perf_counter()
    session = prepare(req, log)
    t_prepare = time.perf_counter() - t0
    scored: list[dict] = []
    if args.log_plans:
        _record_plans(session.evaluator, scored)
    # the unpruned validation score in prepare() is one evaluation: count the search's own from here
    before = dict(session.evaluator.timers.to_dict())
    res = run_methods(session, args.loss, log).to_data()
    wall = time.perf_counter() - t0
    tm = {k: v - before.get(k, 0) for k, v in res["timers"].items()}
    plan = res["plans"][0]
    search_s = res["wall_s"]
    parts = {
        "load + unpruned test/validation accuracy": t_prepare,
        "refit (surgery + least squares)": tm["refit_s"] + tm["prune_s"],
        "accuracy on validation": tm["accuracy_s"],
        "agent updates (DQN + DDPG)": tm["agents_s"],
        "final plan's test accuracy (refit + 10k images)": tm["test_s"],
    }
    parts["rest (states, latency model, bookkeeping)"] = wall - sum(parts.values())
    lines = [
        (
            f"optimize {args.model}, cpcdrl, {args.episodes} episodes, {req.val_size} validation images, torch threads"
            f" {torch.get_num_threads()}, {platform.processor() or platform.machine()}"
        ),
        f"wall time: {wall:.0f} s ({wall / 60:.1f} min; goal <= {args.goal_min:g} min); search alone {search_s:.0f} s",
        (
            f"plans scored: {tm['evaluations']} (cache hits {tm['cache_hits']}; stopped early: {tm['early_stops']}"
            f" infeasible, {tm['screened']} screened)"
        ),
    ]
    lines += [f"  {k:<48} {v:7.1f} s  {100 * v / wall:5.1f} %" for k, v in parts.items()]
    best = plan.get("latency_ms", {}).get("total_ms")
    lines.append(
        f"best plan: cut {plan.get('cut')}, {best if best is None else round(best, 2)} ms, test"
        f" {plan['accuracy'].get('test')}"
    )
    print("\n".join(lines))
    if args.log_plans:
        atomic_write_json(Path(args.log_plans), {"model": args.model, "seed": args.seed, "plans": scored})
    if args.out:
        plan = {
            **plan,
            "checkpoint": os.path.relpath(plan["checkpoint"]),
            "data": {**plan["data"], "source": os.path.relpath(plan["data"]["source"])},
        }
        atomic_write_json(
            Path(args.out),
            {
                "args": portable_args(args),
                "wall_s": wall,
                "parts_s": parts,
                "timers": tm,
                "plan": plan,
                "report": lines,
            },
        )


def _record_plans(ev: PlanEvaluator, out: list[dict]) -> None:
    """Append every plan ``ev`` prunes and scores (not cache hits) to ``out``."""
    evaluate = ev.evaluate

    def logged(cut, ratios, incumbent_ms=None):
        n = ev.timers.evaluations
        r = evaluate(cut, ratios, incumbent_ms)
        if ev.timers.evaluations > n:
            out.append({"cut": cut, "ratios": list(r.ratios), "screened": r.screened})
        return r

    ev.evaluate = logged  # type: ignore[method-assign]


def replay(req: OptimizeRequest, path: Path, n_plans: int, out: str | None, log) -> None:
    """Rescore logged plans with two evaluators, eager and scoring copy, 10 plans at a time in alternating order.

    Each evaluator keeps its own in-run cache, as the search's does; the
    blocks alternate so that host drift falls on both alike.
    """
    session = prepare(req, log)
    plans = json.loads(path.read_text())["plans"][:n_plans]
    a0 = session.base_val - req.max_accuracy_loss  # early stopping as in the search (run_methods)
    evs = {kind: replace(session.evaluator, _cache={}, timers=Timers(), a0=a0) for kind in ("eager", "scoring_copy")}
    wall = dict.fromkeys(evs, 0.0)
    acc: dict[str, list[float]] = {k: [] for k in evs}
    for b, start in enumerate(range(0, len(plans), 10)):
        for kind in ("eager", "scoring_copy") if b % 2 == 0 else ("scoring_copy", "eager"):
            env.scoring_copy = scoring_copy if kind == "scoring_copy" else (lambda m: m)  # what env.evaluate scores on
            t = time.perf_counter()
            for p in plans[start : start + 10]:
                acc[kind].append(
                    evs[kind].evaluate(p["cut"], p["ratios"], incumbent_ms=-1.0 if p["screened"] else None).accuracy
                )
            wall[kind] += time.perf_counter() - t
        log(f"block {b}: " + ", ".join(f"{k} {v:.1f} s" for k, v in wall.items()))
    env.scoring_copy = scoring_copy
    same = sum(a == b for a, b in zip(acc["eager"], acc["scoring_copy"]))
    lines = [
        f"replay of {len(plans)} plans from {path.name} ({req.model}), blocks of 10 in alternating order, torch threads"
        f" {torch.get_num_threads()}"
    ]
    for k, ev in evs.items():
        lines.append(
            f"  {k:<13} {wall[k]:7.1f} s  (refit {ev.timers.refit_s:6.1f} s, accuracy {ev.timers.accuracy_s:6.1f} s)"
        )
    lines.append(
        f"eager / scoring copy: {wall['eager'] / wall['scoring_copy']:.2f}x overall, "
        f"{evs['eager'].timers.accuracy_s / evs['scoring_copy'].timers.accuracy_s:.2f}x on the accuracy checks; "
        f"identical accuracies {same} of {len(plans)}"
    )
    print("\n".join(lines))
    if out:
        atomic_write_json(
            Path(out),
            {
                "replay": path.name,
                "plans": len(plans),
                "wall_s": wall,
                "timers": {k: ev.timers.to_dict() for k, ev in evs.items()},
                "identical": same,
                "report": lines,
            },
        )


def compare_scoring(req: OptimizeRequest, n_plans: int, seed: int, log) -> None:
    """Eager vs scoring copy on one validation chunk of random pruned plans, in alternating order (drift cancels in
    the ratio)."""
    session = prepare(req, log)
    ev = session.evaluator
    rng = np.random.default_rng(seed)
    cuts = [c for c in session.analysis.cuttable_points() if c > 0]
    x = ev.val_x[: ev.chunk]
    rows = []
    for i in range(n_plans):
        cut = int(rng.choice(cuts))
        net = prune(
            ev.model, ev.analysis, cut, list(rng.uniform(0.3, 1.0, cut)), ev.calibration, ev.prune_config, ev.groups
        ).model
        times = {"eager": [], "scoring_copy": []}
        for rep in range(4):
            for kind in ("eager", "scoring_copy") if (i + rep) % 2 == 0 else ("scoring_copy", "eager"):
                t = time.perf_counter()
                pred = predict(
                    scoring_copy(net) if kind == "scoring_copy" else net, x
                )  # the copy's cost is part of its time
                times[kind].append(time.perf_counter() - t)
                if kind == "eager":
                    want = pred
                else:
                    agree = float((pred == want).float().mean())
        e, f = float(np.median(times["eager"])), float(np.median(times["scoring_copy"]))
        rows.append(e / f)
        print(
            f"plan {i}: cut {cut:2d}  eager {e:.3f} s  scoring copy {f:.3f} s  ratio {e / f:.2f}  predictions agree"
            f" {100 * agree:.1f} %",
            flush=True,
        )
    print(
        f"median ratio over {n_plans} plans: {np.median(rows):.2f} (min {min(rows):.2f}, max {max(rows):.2f}); {len(x)}"
        f" images, {req.model}"
    )


if __name__ == "__main__":
    main()
