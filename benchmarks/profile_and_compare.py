"""Profile the CIFAR models on the emulated Pi and on this host, time the profiler, compare estimates.

    sudo python benchmarks/profile_and_compare.py --out benchmarks/results/profile

Brings `cpcdrl testbed` up (0.25 CPU, 200 KB/s) unless a testbed named --host
is already up, profiles each model there and locally at the default grid,
prints the profiler's wall time per model, runs `cpcdrl compare` and writes
compare-<model>.json/.png and summary.md. Takes the testbed down if it made it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cpcdrl_deploy.core.fileio import atomic_write_bytes, atomic_write_json
from cpcdrl_deploy.devices import testbed
from cpcdrl_deploy.devices.remote import connect
from cpcdrl_deploy.measure.compare import compare, plot_compare
from cpcdrl_deploy.measure.profile import load_profile
from cpcdrl_deploy.measure.profiler import DEFAULT_GRID, profile_host


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet,vgg16")
    ap.add_argument("--host", default="pi")
    ap.add_argument("--out", default="benchmarks/results/profile")
    ap.add_argument(
        "--compare-only",
        action="store_true",
        help="profile nothing: redo the comparisons from the profiles and walltime.json under --out",
    )
    args = ap.parse_args()
    out = Path(args.out)
    log = lambda s: print(s, file=sys.stderr, flush=True)
    made = not args.compare_only and testbed.load_state(args.host) is None
    if made:
        testbed.up(args.host, 0.25, "200KB/s", log=log)
    walls_path = out / "walltime.json"
    walls = json.loads(walls_path.read_text()) if walls_path.exists() else {}
    try:
        for model in [] if args.compare_only else args.models.split(","):
            dev = connect(args.host)
            t0 = time.perf_counter()
            try:
                prof = profile_host(dev, [model], out / f"{args.host}.json", DEFAULT_GRID, log=log)
            finally:
                dev.close()
            t = prof.tables[model]
            walls[model] = {
                "wall_s": time.perf_counter() - t0,
                "models_timed": sum(len(lay.points) for lay in t.layers)
                + len(t.heads)
                + len(t.tails)
                + len(t.pruned_heads),
            }
            atomic_write_json(walls_path, walls)
            log(f"profiled {model} on {args.host} in {walls[model]['wall_s']:.0f} s")
            profile_host(connect("local"), [model], out / "local.json", DEFAULT_GRID, measure_link_too=False, log=log)
        lines = ["| model | profiler wall time on the emulated Pi (0.25 CPU) | models timed |", "|---|---|---|"]
        lines += [f"| {m} | {w['wall_s']:.0f} s | {w['models_timed']} |" for m, w in walls.items()]
        lines += [
            "",
            (
                "| model | end to end: tables | end to end: MAC estimate (F fitted) | edge side: tables | edge side:"
                " MAC estimate |"
            ),
            "|---|---|---|---|---|",
        ]
        results = {}
        for model in args.models.split(","):
            res = results[model] = compare(model, str(out / f"{args.host}.json"), str(out / "local.json"))
            atomic_write_json(out / f"compare-{model}.json", res)
            plot_compare(res, out / f"compare-{model}.png")
            f = res["fidelity"]
            lines.append(
                f"| {model} | "
                + " | ".join(
                    f"{f[k]['median_abs_pct']:.1f} % / {f[k]['worst_abs_pct']:.1f} %"
                    for k in ("total_table", "total_analytic", "edge_table", "edge_analytic")
                )
                + " |"
            )
        lines += [
            "",
            (
                "| model | channel block (edge / cloud) | pruned heads timed "
                "| predicted from the unpruned head by the tables' ratio: median / median abs / worst | "
                "interpolated between the other timed heads (leave one out) |"
            ),
            "|---|---|---|---|---|",
        ]
        profiles = [load_profile(out / f"{h}.json") for h in (args.host, "local")]
        for model, res in results.items():
            f = res["fidelity"]
            blocks = " / ".join(str(p.tables[model].channel_block) for p in profiles)
            lines.append(
                f"| {model} | {blocks} | {len(res['pruned_heads'])} | "
                + " | ".join(
                    (
                        f"{f[k]['median_pct']:+.1f} % / {f[k]['median_abs_pct']:.1f} % / {f[k]['worst_abs_pct']:.1f} %"
                        if f[k]
                        else "-"
                    )
                    for k in ("pruned_head_ratio", "pruned_head_interpolated")
                )
                + " |"
            )
        lines.append("")
        lines.append(
            "Errors vs the direct measurement, median / worst absolute, over all cuts; pruned heads: every cut at each"
            " grid keep below 1."
        )
        atomic_write_bytes(out / "summary.md", ("\n".join(lines) + "\n").encode())
        print("\n".join(lines))
    finally:
        if made:
            testbed.down(args.host)


if __name__ == "__main__":
    main()
