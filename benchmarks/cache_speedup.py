"""What the persistent accuracy cache saves: the same optimize run cold, then on other links with the cache warm.

    python benchmarks/cache_speedup.py --model mobilenet --out benchmarks/results/cache_speedup.json

Runs, in one process and one sitting: (1) cold, an empty cache, at the first
link; (2) the same request again (every plan overlaps); (3) each other link
(the plans overlap where the search goes the same way). Reports each run's
wall time (loading included), plans pruned and scored, plans read from the
cache, and the ratio to the cold run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from cpcdrl_deploy.core.fileio import atomic_write_json, portable_args
from cpcdrl_deploy.devices.testbed import parse_bandwidth
from cpcdrl_deploy.search.methods import SearchConfig
from cpcdrl_deploy.search.optimize import OptimizeRequest, optimize

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet")
    ap.add_argument("--links", default="200KB/s,1MB/s,50KB/s")
    ap.add_argument("--methods", default="cpcdrl,greedy,neurosurgeon")
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--max-accuracy-loss", type=float, default=2.0)
    ap.add_argument("--val-size", type=int, default=2000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    builtin = args.model == "tinyvgg"
    ckpt = None if builtin else SHARED / "models" / f"{args.model}-cifar10.pth"
    from cpcdrl_deploy.models.zoo import resolve_checkpoint

    links = args.links.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for i, link in enumerate([links[0], *links]):
            req = OptimizeRequest(
                model=args.model,
                checkpoint=resolve_checkpoint(args.model, ckpt, required=True),
                data="builtin" if builtin else str(SHARED / "datasets" / "cifar10-jpeg.tar.gz"),
                max_accuracy_loss=args.max_accuracy_loss,
                methods=tuple(args.methods.split(",")),
                val_size=args.val_size,
                search=SearchConfig(episodes=args.episodes),
                bandwidth_bytes_per_s=parse_bandwidth(link),
                cache=Path(cache),
                val_source="test",
            )
            t0 = time.perf_counter()
            res = optimize(req).to_data()
            wall = time.perf_counter() - t0
            t = res["timers"]
            row = {
                "run": "cold" if i == 0 else ("same again" if i == 1 else "other link"),
                "link": link,
                "wall_s": round(wall, 2),
                "pruned_and_scored": t["evaluations"],
                "from_cache": t["store_hits"],
                "cpcdrl_ms": (
                    next(p for p in res["plans"] if p["method"] == "cpcdrl").get("latency_ms", {}).get("total_ms")
                ),
            }
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    for r in rows:
        r["ratio_to_cold"] = round(r["wall_s"] / rows[0]["wall_s"], 3)
    lines = [
        "| run | link | wall s | / cold | pruned and scored | from cache | CPCDRL ms |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        (
            f"| {r['run']} | {r['link']} | {r['wall_s']:.1f} | {r['ratio_to_cold']:.2f} | {r['pruned_and_scored']} |"
            f" {r['from_cache']} | {r['cpcdrl_ms']:.1f} |"
            if r["cpcdrl_ms"] is not None
            else (
                f"| {r['run']} | {r['link']} | {r['wall_s']:.1f} | {r['ratio_to_cold']:.2f} | "
                f"{r['pruned_and_scored']} | {r['from_cache']} | - |"
            )
        )
        for r in rows
    ]
    print("\n".join(lines))
    if args.out:
        atomic_write_json(args.out, {"model": args.model, "args": portable_args(args), "runs": rows})


if __name__ == "__main__":
    main()
