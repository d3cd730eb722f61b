"""Profile the CIFAR models on the emulated Pi and on this host, time the profiler, compare estimates.

    sudo python benchmarks/profile_and_compare.py --out benchmarks/results/profile

Brings `cpcdrl testbed` up (0.25 CPU, 200 KB/s) unless a testbed named --host
is already up, profiles each model there and locally at the default grid,
prints the profiler's wall time per model, runs `cpcdrl compare` and writes
compare-<model>.json/.png and summary.md. Takes the testbed down if it made it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cpcdrl_deploy import testbed
from cpcdrl_deploy.compare import compare, plot_compare
from cpcdrl_deploy.fileio import atomic_write_bytes, atomic_write_json
from cpcdrl_deploy.profiling import DEFAULT_GRID, profile_host
from cpcdrl_deploy.remote import connect


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet,vgg16")
    ap.add_argument("--host", default="pi")
    ap.add_argument("--out", default="benchmarks/results/profile")
    args = ap.parse_args()
    out = Path(args.out)
    log = lambda s: print(s, file=sys.stderr, flush=True)
    made = testbed.load_state(args.host) is None
    if made:
        testbed.up(args.host, 0.25, "200KB/s", log=log)
    lines = ["| model | profiler wall time on the emulated Pi (0.25 CPU) | models timed |", "|---|---|---|"]
    try:
        for model in args.models.split(","):
            dev = connect(args.host)
            t0 = time.perf_counter()
            try:
                prof = profile_host(dev, [model], out / f"{args.host}.json", DEFAULT_GRID, log=log)
            finally:
                dev.close()
            wall = time.perf_counter() - t0
            n = sum(len(lay["points"]) for lay in prof.tables[model]["layers"]) + len(prof.tables[model]["heads"]) + len(prof.tables[model]["tails"])
            lines.append(f"| {model} | {wall:.0f} s | {n} |")
            log(f"profiled {model} on {args.host} in {wall:.0f} s")
            profile_host(connect("local"), [model], out / "local.json", DEFAULT_GRID, measure_link_too=False, log=log)
        lines += ["", "| model | end to end: tables | end to end: MAC estimate (F fitted) | edge side: tables | edge side: MAC estimate |",
                  "|---|---|---|---|---|"]
        for model in args.models.split(","):
            res = compare(model, str(out / f"{args.host}.json"), str(out / "local.json"))
            atomic_write_json(out / f"compare-{model}.json", res)
            plot_compare(res, out / f"compare-{model}.png")
            f = res["fidelity"]
            lines.append(f"| {model} | " + " | ".join(
                f"{f[k]['median_abs_pct']:.1f} % / {f[k]['worst_abs_pct']:.1f} %" for k in ("total_table", "total_analytic", "edge_table", "edge_analytic")
            ) + " |")
        lines.append("")
        lines.append("Errors vs the direct measurement, median / worst absolute, over all cuts.")
        atomic_write_bytes(out / "summary.md", ("\n".join(lines) + "\n").encode())
        print("\n".join(lines))
    finally:
        if made:
            testbed.down(args.host)


if __name__ == "__main__":
    main()
