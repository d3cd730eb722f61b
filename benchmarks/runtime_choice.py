"""Does the optimiser's choice of edge runtime hold on the device? Optimise with both runtimes' tables, then bench both.

    python benchmarks/runtime_choice.py [--host pi] [--model tinyvgg] [--out benchmarks/results/runtime_compare/choice]
    python benchmarks/runtime_choice.py --model vgg16 --checkpoint ../shared/models/vgg16-cifar10.pth \
        --data ../shared/datasets/cifar10-jpeg.tar.gz --profiles EDGE CLOUD --out
        benchmarks/results/runtime_compare/choice-vgg16

1. Profiles the edge (``--host``) with ONNX Runtime and LiteRT side by side
   (one run, the same passes) into one file, and this host (the cloud) with
   ONNX Runtime, unless ``--profiles`` names existing ones.
2. ``cpcdrl optimize`` with those profiles (``--edge-runtime auto``): every
   plan is priced with each runtime's tables and the plan records the faster.
3. ``cpcdrl bench`` of that plan as chosen and the same plan with the other
   runtime, interleaved on the device: the paired ratio (other / chosen)
   above 1 confirms the choice.
Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from cpcdrl_deploy.core.fileio import atomic_write_json, read_json


def sh(*args: str) -> None:
    print("$ cpcdrl " + " ".join(args), file=sys.stderr, flush=True)
    subprocess.run(["cpcdrl", *args], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="pi")
    ap.add_argument("--model", default="tinyvgg")
    ap.add_argument(
        "--profiles", nargs=2, metavar=("EDGE", "CLOUD"), help="existing profiles with both runtimes' edge tables"
    )
    ap.add_argument("--checkpoint", help="the model's checkpoint (default: optimize's)")
    ap.add_argument("--data", help="CIFAR-10 data (default: optimize's)")
    ap.add_argument("--max-accuracy-loss", default="2")
    ap.add_argument("--episodes", default="40")
    ap.add_argument("--seconds", default="5")
    ap.add_argument("--out", default="benchmarks/results/runtime_compare/choice")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.profiles:
        edge, cloud = args.profiles
    else:
        edge, cloud = str(out / f"{args.host}.json"), str(out / "local.json")
        sh(
            "profile",
            "--host",
            args.host,
            "-m",
            args.model,
            "--runtime",
            "onnxruntime",
            "--runtime",
            "litert",
            "-o",
            edge,
        )
        sh("profile", "--host", "local", "-m", args.model, "-o", cloud)
    plan = out / "plan.json"
    extra = [
        *(["--checkpoint", args.checkpoint] if args.checkpoint else []),
        *(["--data", args.data] if args.data else []),
    ]
    sh(
        "optimize",
        args.model,
        *extra,
        "--edge",
        edge,
        "--cloud",
        cloud,
        "--max-accuracy-loss",
        args.max_accuracy_loss,
        "--episodes",
        args.episodes,
        "--method",
        "cpcdrl",
        "--out",
        str(plan),
    )
    chosen = read_json(plan)
    if not chosen.get("feasible", True) or "cut" not in chosen:
        print("the optimiser found no plan that meets the accuracy target: no runtime choice to check", file=sys.stderr)
        return 1
    if chosen["cut"] == 0:
        print("the plan runs nothing on the device (cut 0): no runtime choice to check", file=sys.stderr)
        return 1
    other = dict(chosen, runtime="onnxruntime" if chosen["runtime"] == "litert" else "litert")
    other_path = atomic_write_json(out / "plan-other-runtime.json", other)
    sh("bench", str(plan), str(other_path), "--edge", args.host, "--seconds", args.seconds, "--out", str(out / "bench"))
    rep = read_json(out / "bench" / "bench-report.json")
    rows = {r["id"]: r for r in rep["plans"]}
    ratio = rows["p1"]["ratio_to_reference"]
    summary = {
        "model": args.model,
        "cut": chosen["cut"],
        "chosen": chosen["runtime"],
        "other": other["runtime"],
        "predicted_ms_tables": {
            chosen["runtime"]: rows["p0"]["predicted_ms"].get("table"),
            other["runtime"]: rows["p1"]["predicted_ms"].get("table"),
        },
        "measured_p50_ms": {
            chosen["runtime"]: rows["p0"]["e2e_ms"]["p50"],
            other["runtime"]: rows["p1"]["e2e_ms"]["p50"],
        },
        "measured_other_over_chosen": ratio,
        "confirms": ratio["median"] is not None and ratio["median"] > 1.0,
        "confirms_at_95pct": ratio["median"] is not None and ratio["ci95"][0] > 1.0,
    }
    atomic_write_json(out / "summary.json", summary)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
