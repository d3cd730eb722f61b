"""Has CPCDRL converged at the grid's episode count? Its plan at several budgets, beside the reference search.

    python benchmarks/episode_convergence.py --model tinysplit --pair pi --link 200KB/s --losses 2,3 --episodes \
        40,80,160 \
        --out benchmarks/results/optimizer_grid/convergence/tinysplit-pi

The optimizer grid runs 40 episodes per method to fit this 2-core machine
(the CLI default is 300). This runs CPCDRL alone at each ``--episodes`` with
every seed, and the grid's reference search once (10x the evaluations
CPCDRL used at the smallest count), on the grid's images and rules: a plan
counts only if it meets A0 on the test images.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from optimizer_grid import (
    PAIRS,
    SHARED,
    _row,
    grid_checkpoint,
    link_model,
    reference_budget,
    reference_search,
    setting_evaluator,
)  # noqa: E402

from cpcdrl_deploy.core.fileio import atomic_write_bytes, atomic_write_json, portable_args  # noqa: E402
from cpcdrl_deploy.measure.profile import load_profile  # noqa: E402
from cpcdrl_deploy.search.accuracy_cache import default_cache_dir  # noqa: E402
from cpcdrl_deploy.search.methods import SearchConfig, run_rl  # noqa: E402
from cpcdrl_deploy.search.optimize import OptimizeRequest, prepare  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tinysplit")
    ap.add_argument("--pair", default="pi", choices=sorted(PAIRS))
    ap.add_argument("--link", default="200KB/s")
    ap.add_argument("--losses", default="2,3")
    ap.add_argument("--episodes", default="40,80,160")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--val-size", type=int, default=2000)
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--transfer", default="fp32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default=str(SHARED / "datasets" / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--checkpoints", default=str(SHARED / "models"))
    ap.add_argument("--cache", default=str(default_cache_dir()))
    ap.add_argument("--limit", type=int, default=None, help="test images (default: all that validation leaves)")
    ap.add_argument("--out", default="benchmarks/results/optimizer_grid/convergence")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    episodes = [int(x) for x in args.episodes.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    losses = [float(x) for x in args.losses.split(",")]
    req = OptimizeRequest(
        model=args.model,
        checkpoint=grid_checkpoint(args.model, args.checkpoints),
        data=args.data,
        max_accuracy_loss=max(losses),
        val_size=args.val_size,
        calib_size=args.calib,
        test_limit=args.limit,
        search=SearchConfig(episodes=min(episodes)),
        cache=Path(args.cache),
        val_source="test",
        transfer=args.transfer,
    )
    session = prepare(req, log)
    lm = link_model(*(load_profile(p) for p in PAIRS[args.pair]), args.link)
    settings = []
    for loss in losses:
        ev = setting_evaluator(session, lm, loss)
        a0 = ev.a0
        rows = []
        for n in episodes:
            for seed in seeds:
                t0 = time.perf_counter()
                r = run_rl(ev, a0, replace(req.search, episodes=n, seed=seed))
                rows.append({**_row(session, r, loss), "episodes": n, "seed": seed})
                log(
                    f"{args.model} {args.pair} {args.link} loss {loss:g}: {n} episodes, seed {seed}:"
                    f" {rows[-1].get('latency_ms', float('nan')):.3f} ms, {r.evaluations} plans"
                    f" [{time.perf_counter() - t0:.0f} s]"
                )
        budget = reference_budget(r["evaluations"] for r in rows if r["episodes"] == min(episodes))
        rows.append({**_row(session, reference_search(ev, a0, req.search, budget), loss), "budget": budget})
        settings.append({"loss": loss, "a0_test": session.base_test - loss, "a0_validation": a0, "rows": rows})
    doc = {
        "args": portable_args(args, drop=("cache",)),
        "where": f"CPU, {torch.get_num_threads()} threads",
        "settings": settings,
    }
    out = Path(args.out)
    atomic_write_json(out / "results.json", doc)
    atomic_write_bytes(out / "table.md", (table(args, settings, episodes) + "\n").encode())
    print(table(args, settings, episodes))


def table(args: argparse.Namespace, settings: list[dict], episodes: list[int]) -> str:
    """Per loss and episode count: CPCDRL's mean / worst latency over the seeds meeting A0 on test, and plans scored."""
    lines = [
        f"# CPCDRL against its episode count ({args.model}, {args.pair} pair, {args.link})",
        "",
        "| loss | " + " | ".join(f"{n} episodes" for n in episodes) + " | reference (10x the first) |",
        "|---|" + "---|" * (len(episodes) + 1),
    ]
    for s in settings:
        cells = []
        for n in episodes:
            rs = [r for r in s["rows"] if r.get("episodes") == n]
            ok = [r["latency_ms"] for r in rs if r.get("feasible_test")]
            worst = f" / {max(ok):.2f}" if len(ok) == len(rs) else f" ({len(ok)}/{len(rs)} meet A0)"
            plans = statistics.mean(r["evaluations"] for r in rs)
            cells.append(
                (f"{statistics.mean(ok):.2f}{worst}" if ok else f"misses A0 (0/{len(rs)})") + f", {plans:.0f} plans"
            )
        ref = next(r for r in s["rows"] if r["method"] == "reference")
        cells.append(
            f"{ref['latency_ms']:.2f}, {ref['evaluations']} plans"
            + ("" if ref.get("feasible_test") else " (misses A0 on test)")
            if ref.get("feasible_val")
            else "none"
        )
        lines.append(f"| {s['loss']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
