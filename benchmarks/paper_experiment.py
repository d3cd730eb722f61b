"""The paper's experiment (Sec. IV, Fig. 3-5) on the `paper` profile, for the CIFAR reference models.

    python benchmarks/paper_experiment.py --out benchmarks/results/paper   # both models

For each model: every method at accuracy losses of 0.5, 1, 2 and 3 points
below the unpruned model. One evaluator per model is shared by all runs, so
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

from cpcdrl_deploy.fileio import atomic_write_bytes, atomic_write_json
from cpcdrl_deploy.optimize import OptimizeRequest, prepare, run_methods
from cpcdrl_deploy.report import methods_table, plot_latency_vs, plot_rewards
from cpcdrl_deploy.search import METHODS, SearchConfig

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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    losses = [float(x) for x in args.losses.split(",")]
    log = lambda s: print(s, file=sys.stderr, flush=True)
    for model in args.models.split(","):
        out = Path(args.out) / model
        req = OptimizeRequest(
            model=model, checkpoint=Path(args.checkpoints) / f"{model}-cifar10.pth", data=args.data, max_accuracy_loss=max(losses),
            methods=METHODS, val_size=args.val_size, calib_size=args.calib, test_limit=args.limit,
            search=SearchConfig(episodes=args.episodes, seed=args.seed), device=args.device,
        )
        t0 = time.perf_counter()
        session = prepare(req, log)
        runs = []
        for loss in losses:
            res = run_methods(session, loss, log, early_stop_a0=session.base_val - max(losses))
            res.pop("history")
            runs.append(res)
            log(f"{model} loss {loss}: done at {time.perf_counter() - t0:.0f} s")
            atomic_write_json(out / "results.json", {"model": model, "args": vars(args), "runs": runs})
        lines = [f"## {model}: unpruned {session.base_test:.2f}% test ({len(session.test_idx)} images), {session.base_val:.2f}% validation", ""]
        for res in runs:
            lines += [f"### at most {res['max_accuracy_loss']:g} points lost (A0 = {res['a0_test']:.2f}% test)", "", methods_table(res["plans"]), ""]
        where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
        lines.append(f"wall time {time.perf_counter() - t0:.0f} s ({where}); evaluator: {runs[-1]['timers']}")
        atomic_write_bytes(out / "table.md", ("\n".join(lines) + "\n").encode())
        series = {m: [next(p for p in r["plans"] if p["method"] == m).get("latency_ms", {}).get("total_ms") for r in runs] for m in METHODS}
        plot_latency_vs([r["a0_test"] for r in runs], series, "accuracy requirement A0 (test top-1, %)", out / "latency_vs_requirement.png",
                        f"{model}: latency vs accuracy requirement (Fig. 4a/5a)")
        plot_latency_vs(losses, series, "accuracy loss allowed (points)", out / "latency_vs_loss.png", f"{model}: latency vs accuracy loss (Fig. 4b/5b)")
        mid = runs[min(1, len(runs) - 1)]
        plot_rewards(mid["rewards"], out / "rewards.png", f"{model}: reward vs episode at {mid['max_accuracy_loss']:g} points (Fig. 3)")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
