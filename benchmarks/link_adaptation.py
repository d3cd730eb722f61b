"""A plan set following the link on the emulated Pi, against each of its plans held fixed (issue 39).

    cpcdrl testbed up --name pi
    python benchmarks/link_adaptation.py --set plans.json --trace step            # 50 KB/s <-> 2 MB/s every 20 s
    python benchmarks/link_adaptation.py --set plans.json --trace walk --seed 1   # random walk, 30 KB/s - 5 MB/s

Writes the trace it used and `cpcdrl deploy --adaptive`'s report and figure
to benchmarks/results/link_adaptation/NAME/, and prints the figures the
issue asks for: adaptive overall p50 against the best static plan's, each
phase of at least 10 s against the oracle, the switch delays, the estimate's
error in steady phases, failed requests and agreement with PyTorch. The set
should be optimised on profiles of the device it runs on (`cpcdrl profile
--host pi`), or the oracle and the set will disagree about every plan.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np

from cpcdrl_deploy.core.fileio import atomic_write_json
from cpcdrl_deploy.deploy.adaptive import MIN_PHASE_S, AdaptiveRequest, deploy_adaptive, summary_lines

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "link_adaptation"


def step_trace(low: float = 50e3, high: float = 2e6, every_s: float = 20.0, seconds: float = 120.0) -> list[tuple]:
    return [(t, low if k % 2 == 0 else high) for k, t in enumerate(np.arange(0.0, seconds, every_s))]


def walk_trace(seed: int, low: float = 30e3, high: float = 5e6, every_s: float = 10.0, seconds: float = 120.0):
    """A random walk in log rate: each step x1/3 to x3 of the last, reflected at the bounds."""
    rng = random.Random(seed)
    x, out = math.log(math.sqrt(low * high)), []
    for t in np.arange(0.0, seconds, every_s):
        out.append((float(t), math.exp(x)))
        x += rng.uniform(-math.log(3), math.log(3))
        x = min(max(x, 2 * math.log(low) - x), 2 * math.log(high) - x)
    return out


def acceptance(rep: dict) -> dict:
    """The issue's figures from a report."""
    o = rep["overall"]
    statics = {n: v["p50"] for n, v in o.items() if n != "adaptive" and v["p50"] is not None}
    best = min(statics, key=lambda n: statics[n]) if statics else None
    long = [p for p in rep["phases"] if p["end_s"] - p["start_s"] >= MIN_PHASE_S and p.get("adaptive_over_oracle")]
    delays = [d["delay_s"] for d in rep["switch_delays"] if d["delay_s"] is not None]
    errs = [abs(p["estimate_error"]["error"]) for p in long if p.get("estimate_error")]
    c = rep["checks"]
    return {
        "adaptive_p50_ms": o["adaptive"]["p50"],
        "best_static": best,
        "best_static_p50_ms": statics.get(best) if best else None,
        "adaptive_over_best_static": o["adaptive"]["p50"] / statics[best] if best else None,
        "phases_judged": len(long),
        "phases_within_10pct_of_oracle": sum(1 for p in long if p["adaptive_over_oracle"] <= 1.10),
        "worst_phase_over_oracle": max((p["adaptive_over_oracle"] for p in long), default=None),
        "switch_delay_median_s": float(np.median(delays)) if delays else None,
        "rate_changes_not_followed": sum(1 for d in rep["switch_delays"] if d["delay_s"] is None),
        "estimate_abs_error_median": float(np.median(errs)) if errs else None,
        "estimate_abs_error_max": max(errs) if errs else None,
        "phases_estimate_within_20pct": sum(1 for e in errs if e <= 0.20),
        "failed_requests": sum(v["failed"] for v in c.values()),
        "agreement_with_pytorch_pct": min(
            (v["agreement_with_pytorch_pct"] for v in c.values() if v["agreement_with_pytorch_pct"] is not None),
            default=None,
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", required=True, help="plans.json from optimize --bandwidth-range")
    ap.add_argument("--trace", default="step", help="step, walk, or a time_s,rate CSV file")
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0, help="the random walk's")
    ap.add_argument("--edge", default="pi")
    ap.add_argument("--name", default=None, help="results folder name (default: SET-TRACE)")
    args = ap.parse_args()
    name = (
        args.name or f"{Path(args.set).stem}-{args.trace if args.trace in ('step', 'walk') else Path(args.trace).stem}"
    )
    out = RESULTS / name
    out.mkdir(parents=True, exist_ok=True)
    if args.trace in ("step", "walk"):
        rows = step_trace(seconds=args.seconds) if args.trace == "step" else walk_trace(args.seed, seconds=args.seconds)
        trace = out / "trace.csv"
        trace.write_text("time_s,rate\n" + "".join(f"{t:g},{r:.0f}\n" for t, r in rows))
    else:
        trace = Path(args.trace)
    with tempfile.TemporaryDirectory(prefix="cpcdrl-adaptive-") as tmp:  # the exports stay out of the results
        req = AdaptiveRequest(Path(args.set), trace, args.seconds, edge=args.edge, out=Path(tmp), images=64)
        rep = deploy_adaptive(req, log=print)
        if (Path(tmp) / "adaptive.png").exists():
            shutil.copy(Path(tmp) / "adaptive.png", out / "adaptive.png")
    # no machine's folders in a committed result: the set by its file name (its command is in the notes), the trace
    # relative to the repository
    rep.update(planset=Path(args.set).name, trace=os.path.relpath(trace, REPO))
    atomic_write_json(out / "adaptive-report.json", rep)
    print("\n".join(summary_lines(rep)))
    figures = acceptance(rep)
    (out / "acceptance.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
