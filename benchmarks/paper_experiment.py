"""The paper's experiment (Sec. IV, Fig. 3-5) on the `paper` profile, for the CIFAR reference models.

    python benchmarks/paper_experiment.py --out benchmarks/results/paper   # both models

For each model: every method at accuracy losses of 0.5, 1, 2 and 3 points
below the unpruned model. On a machine with more cores or a GPU the levels can
run in parallel, then be merged:

    for l in 0.5 1 2 3; do python benchmarks/paper_experiment.py --device cuda --losses $l --part part-$l & done; wait
    python benchmarks/paper_experiment.py --merge
 One evaluator per model is shared by all runs, so
identical plans (the baselines' especially) are scored once; early stopping
uses the loosest constraint so it never drops a plan a tighter run could use.
Writes results.json, table.md and the Fig. 3/4/5-style plots per model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from cpcdrl_deploy.core.fileio import atomic_write_bytes, atomic_write_json, portable_args, read_json
from cpcdrl_deploy.search.methods import METHODS, SearchConfig
from cpcdrl_deploy.search.optimize import OptimizeRequest, prepare, run_methods
from cpcdrl_deploy.search.plan import PlanRecord
from cpcdrl_deploy.search.report import methods_table, plot_latency_vs, plot_rewards

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet,vgg16")
    ap.add_argument("--data", default=str(SHARED / "datasets" / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--losses", default="0.5,1,2,3")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--limit", type=int, default=None, help="test images (default all 10,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/paper")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (accuracy results do not depend on it)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where refits and accuracy checks run")
    ap.add_argument("--checkpoints", default=str(SHARED / "models"), help="folder of <model>-cifar10.pth")
    ap.add_argument(
        "--part",
        default=None,
        help="NAME: write only OUT/MODEL/NAME/results.json (one of several parallel runs, e.g. one per loss)",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="combine OUT/MODEL/part-*/results.json into the model's results, table and plots",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    losses = [float(x) for x in args.losses.split(",")]
    log = lambda s: print(s, file=sys.stderr, flush=True)
    for model in args.models.split(","):
        out = Path(args.out) / model
        if args.merge:
            parts = [read_json(p) for p in sorted(out.glob("part-*/results.json"))]
            if not parts:
                raise SystemExit(f"no {out}/part-*/results.json to merge")
            runs = sorted((r for part in parts for r in part["runs"]), key=lambda r: r["max_accuracy_loss"])
            where = "; ".join(sorted({part.get("where", "?") for part in parts}))
            wall = max(part.get("wall_s", 0.0) for part in parts)
            atomic_write_json(
                out / "results.json", {"model": model, "args": parts[0]["args"], "parts": len(parts), "runs": runs}
            )
            write_outputs(
                out,
                model,
                runs,
                parts[0]["test_images"],
                f"{len(parts)} parallel parts, longest {wall:.0f} s ({where})",
            )
            continue
        req = OptimizeRequest(
            model=model,
            checkpoint=Path(args.checkpoints) / f"{model}-cifar10.pth",
            data=args.data,
            max_accuracy_loss=max(losses),
            methods=METHODS,
            val_size=args.val_size,
            calib_size=args.calib,
            test_limit=args.limit,
            search=SearchConfig(episodes=args.episodes, seed=args.seed),
            device=args.device,
        )
        t0 = time.perf_counter()
        session = prepare(req, log)
        where = (
            torch.cuda.get_device_name(args.device)
            if args.device.startswith("cuda")
            else f"CPU, {torch.get_num_threads()} threads"
        )
        dest = out / args.part if args.part else out
        runs = []
        for loss in losses:
            res = run_methods(session, loss, log, early_stop_a0=session.base_val - max(losses)).to_data()
            res.pop("history")
            runs.append(res)
            log(f"{model} loss {loss}: done at {time.perf_counter() - t0:.0f} s")
            atomic_write_json(
                dest / "results.json",
                {
                    "model": model,
                    "args": portable_args(args),
                    "runs": runs,
                    "test_images": len(session.test_idx),
                    "where": where,
                    "wall_s": time.perf_counter() - t0,
                },
            )
        if not args.part:
            write_outputs(out, model, runs, len(session.test_idx), f"{time.perf_counter() - t0:.0f} s ({where})")


def write_outputs(out: Path, model: str, runs: list[dict], test_images: int, wall: str) -> None:
    """table.md and the Fig. 3/4/5-style plots of one model's runs (one per accuracy loss)."""
    u = runs[0]["unpruned"]
    lines = [
        f"## {model}: unpruned {u['test']:.2f}% test ({test_images} images), {u['validation']:.2f}% validation",
        "",
    ]
    for res in runs:
        lines += [
            f"### at most {res['max_accuracy_loss']:g} points lost (A0 = {res['a0_test']:.2f}% test)",
            "",
            methods_table([PlanRecord.from_data(p) for p in res["plans"]]),
            "",
        ]
    lines.append(f"wall time {wall}; evaluator: {runs[-1]['timers']}")
    atomic_write_bytes(out / "table.md", ("\n".join(lines) + "\n").encode())
    losses = [r["max_accuracy_loss"] for r in runs]
    series = {
        m: [next(p for p in r["plans"] if p["method"] == m).get("latency_ms", {}).get("total_ms") for r in runs]
        for m in METHODS
    }
    plot_latency_vs(
        [r["a0_test"] for r in runs],
        series,
        "accuracy requirement A0 (test top-1, %)",
        out / "latency_vs_requirement.png",
        f"{model}: latency vs accuracy requirement (Fig. 4a/5a)",
    )
    plot_latency_vs(
        losses,
        series,
        "accuracy loss allowed (points)",
        out / "latency_vs_loss.png",
        f"{model}: latency vs accuracy loss (Fig. 4b/5b)",
    )
    mid = runs[min(1, len(runs) - 1)]
    plot_rewards(
        mid["rewards"],
        out / "rewards.png",
        f"{model}: reward vs episode at {mid['max_accuracy_loss']:g} points (Fig. 3)",
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
