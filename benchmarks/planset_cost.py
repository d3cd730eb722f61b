"""What a plan set costs and gives, against one optimize run per link (issue 39: the set at most 1.5x one run).

    python benchmarks/planset_cost.py                                   # built-in tinysplit, paper profiles
    python benchmarks/planset_cost.py --model mobilenet --episodes 60 --test-limit 2000 --rounds 1

Each round runs, in a shuffled order, `optimize` (CPCDRL) at each rate the
set searches (fresh accuracy cache each) and `optimize --bandwidth-range`
(fresh cache): the set's wall time over the median single run's is the cost
figure. At each of those rates the set's plan (the band's, no hysteresis)
is priced against the single run's plan there: the quality figure (below 1:
the set's plan is faster). Test misses (plans below A0 on the test images)
are counted for both. A timing: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from cpcdrl_deploy.core.fileio import atomic_write_json, portable_args
from cpcdrl_deploy.models.zoo import resolve_checkpoint
from cpcdrl_deploy.search.methods import SearchConfig
from cpcdrl_deploy.search.optimize import OptimizeRequest, optimize
from cpcdrl_deploy.search.planset import SetRequest, bucket_rates, optimize_set

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _single(req: OptimizeRequest, rate: float) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        res = optimize(replace(req, bandwidth_bytes_per_s=rate, cache=Path(cache)))
        wall = time.perf_counter() - t0
    p = res.plans[0]
    return {
        "rate": rate,
        "wall_s": wall,
        "cut": getattr(p, "cut", None),
        "total_ms": p.latency_ms["total_ms"] if getattr(p, "latency_ms", None) else None,
        "meets_a0_on_test": p.accuracy.meets_a0_on_test,
    }


def _set(req: OptimizeRequest, sreq: SetRequest) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        ps, _, _ = optimize_set(replace(req, cache=Path(cache)), sreq)
        wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "members": [m.model_dump() for m in ps.members],
        "bands": [b.model_dump() for b in ps.bands],
        "at": {
            str(r): {"plan": ps.bands[ps.band_at(r)].plan, "total_ms": ps.predicted_ms(r)[ps.bands[ps.band_at(r)].plan]}
            for r in ps.searched_bytes_per_s
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tinysplit")
    ap.add_argument("--checkpoint", default=None, help="default: built-in, else ../shared/models/MODEL-cifar10.pth")
    ap.add_argument("--data", default="builtin")
    ap.add_argument("--edge", default="paper")
    ap.add_argument("--cloud", default="paper")
    ap.add_argument("--range", default="50e3:5e6", help="LOW:HIGH bytes/s")
    ap.add_argument("--buckets", type=int, default=SetRequest.buckets)
    ap.add_argument("--episodes", type=int, default=60)
    ap.add_argument("--loss", type=float, default=2.0)
    ap.add_argument("--val-size", type=int, default=2000)
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="default: benchmarks/results/planset_cost/MODEL.json")
    args = ap.parse_args()
    lo, hi = (float(v) for v in args.range.split(":"))
    shared = SHARED / "models" / f"{args.model}-cifar10.pth"
    ckpt = resolve_checkpoint(args.model, args.checkpoint or (shared if shared.exists() else None), required=True)
    assert ckpt is not None
    data = args.data if args.data != "shared" else str(SHARED / "datasets" / "cifar10-jpeg.tar.gz")
    req = OptimizeRequest(
        model=args.model,
        checkpoint=ckpt,
        data=data,
        edge=args.edge,
        cloud=args.cloud,
        max_accuracy_loss=args.loss,
        val_size=args.val_size,
        test_limit=args.test_limit,
        search=SearchConfig(episodes=args.episodes, seed=args.seed),
    )
    sreq = SetRequest(lo, hi, buckets=args.buckets)
    rates = bucket_rates(lo, hi, args.buckets)
    rng = random.Random(args.seed)
    rounds = []
    for r in range(args.rounds):
        jobs = [("single", rate) for rate in rates] + [("set", None)]
        rng.shuffle(jobs)  # interleaved: this host's drift spreads over both kinds
        singles, the_set = [], None
        for kind, rate in jobs:
            print(f"round {r}: {kind}" + (f" at {rate / 1e3:.0f} KB/s" if rate else ""), flush=True)
            if kind == "single":
                singles.append(_single(req, rate))
            else:
                the_set = _set(req, sreq)
        assert the_set is not None
        rounds.append({"singles": sorted(singles, key=lambda s: s["rate"]), "set": the_set})
    summary = _summary(rounds)
    out = Path(args.out or Path(__file__).parent / "results" / "planset_cost" / f"{args.model}.json")
    atomic_write_json(
        out,
        {
            "args": portable_args(args),
            "host": platform.node(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "request": {"model": args.model, "episodes": args.episodes, "loss": args.loss, "range": [lo, hi]},
            "buckets": args.buckets,
            "budget": sreq.budget,
            "rounds": rounds,
            "summary": summary,
        },
    )
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}")


def _summary(rounds: list[dict]) -> dict:
    cost = [rd["set"]["wall_s"] / float(np.median([s["wall_s"] for s in rd["singles"]])) for rd in rounds]
    quality = []
    for rd in rounds:
        for s in rd["singles"]:
            mine = rd["set"]["at"][str(s["rate"])]["total_ms"]
            if s["total_ms"]:
                quality.append(mine / s["total_ms"])
    misses_single = sum(1 for rd in rounds for s in rd["singles"] if s["meets_a0_on_test"] is False)
    misses_set = sum(1 for rd in rounds for m in rd["set"]["members"] if m["meets_a0_on_test"] is False)
    return {
        "set_over_median_single_wall": cost,
        "set_plan_over_single_plan_ms": {
            "median": float(np.median(quality)),
            "max": float(max(quality)),
            "min": float(min(quality)),
            "n": len(quality),
        },
        "test_misses": {
            "single_plans": f"{misses_single} of {sum(len(rd['singles']) for rd in rounds)}",
            "set_members": f"{misses_set} of {sum(len(rd['set']['members']) for rd in rounds)}",
        },
    }


if __name__ == "__main__":
    main()
