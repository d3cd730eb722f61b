"""How steady is each host's speed? The speed probe timed back to back on the cloud host and the edge at once.

    python benchmarks/speed_drift.py [--model mobilenet] [--host pi] [--minutes 10] [--out \
        benchmarks/results/speed_drift.json]

A measured table predicts a deployment only if its host runs at the speed it
had when profiled. This times the speed probe (the whole unpruned model, the
profile's ``head{N}`` entry, byte for byte) in the profiler's 100 ms windows
(``timer.time_jobs``, one job, one window per round) for ``--minutes``
on this host (its host CPUs, as the cloud server runs) and on the edge device
at the same time, and prints each side's per-minute medians, their spread
(slowest / fastest minute), and the edge / host ratio minute by minute: if the
ratio holds while both drift, the machine under both sides is what drifts, not
the device's emulation. Needs the testbed up (`cpcdrl testbed up`) for an
emulated edge; with --host local only this host is timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.fileio import atomic_write_json
from cpcdrl_deploy.devices.remote import connect
from cpcdrl_deploy.measure.profiler import PROFILER, probe_model, time_on_device
from cpcdrl_deploy.measure.runtimes import check_runtime

WINDOW_MS = 100  # the profiler's window per round (profiling.measure_tables' round_window_ms)


def _per_minute(means: list[float]) -> list[float]:
    """Each minute's median window; a run shorter than half a minute is one block."""
    per = int(60_000 / WINDOW_MS)
    blocks = [
        float(np.median(means[i : i + per])) for i in range(0, len(means), per) if len(means[i : i + per]) >= per // 2
    ]
    return blocks or [float(np.median(means))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet")
    ap.add_argument("--host", default="pi", help="the edge (testbed name or ssh alias); 'local' times this host only")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/speed_drift.json")
    args = ap.parse_args()
    # a window is timed for at least WINDOW_MS (and >= 1 run), so the round count sets the duration
    rounds = max(2, int(args.minutes * 60_000 / WINDOW_MS))
    opts = (
        f"--threads {args.threads} --warmup 5 --repeats {rounds} --min-time-ms {rounds * WINDOW_MS} --rounds {rounds}"
    )
    gz, shape, _ = probe_model(args.model)
    results: dict[str, list[float]] = {}
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp, "job.json")
        Path(tmp, "probe.onnx.gz").write_bytes(gz)
        job.write_text(json.dumps([{"id": "probe", "file": "probe.onnx.gz", "input_shape": shape}]))

        def time_on(host: str, side: str) -> None:
            # this host through the same Device interface as the edge: LocalDevice runs off the testbed's CPU, as the
            # server does
            try:
                dev = connect(host)
                try:
                    check_runtime(dev)
                    remote = dev.mkdtemp()
                    try:
                        for f in (PROFILER, Path(tmp, "probe.onnx.gz")):
                            dev.put(f, f"{remote}/{f.name}")
                        timed = time_on_device(dev, remote, job, opts, timeout=args.minutes * 60 * 2 + 300)
                    finally:
                        dev.remove(remote)
                finally:
                    dev.close()
            except (CpcdrlError, OSError) as e:
                errors.append(f"{host}: {e}")
                return
            results[side] = [float(x) for x in timed["probe"]["round_means_ms"]]

        t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print(
            f"timing the {args.model} speed probe ({WINDOW_MS} ms windows) for {args.minutes:g} min on this host"
            + ("" if args.host == "local" else f" and on {args.host} at once"),
            flush=True,
        )
        sides = {"host": "local"} | ({} if args.host == "local" else {"edge": args.host})
        threads = [threading.Thread(target=time_on, args=(host, side)) for side, host in sides.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    report: dict = {"model": args.model, "edge": args.host, "started_at": t0, "window_ms": WINDOW_MS, "sides": {}}
    minutes = {side: _per_minute(m) for side, m in results.items()}
    print(
        "| side | windows | window p10 / p50 / p90 ms | minute medians ms | slowest / fastest minute"
        " |\n|---|---|---|---|---|"
    )
    for side, m in results.items():
        mm = minutes[side]
        report["sides"][side] = {"round_means_ms": m, "minute_medians_ms": mm}
        p10, p50, p90 = np.percentile(m, [10, 50, 90])
        print(
            f"| {side} | {len(m)} | {p10:.2f} / {p50:.2f} / {p90:.2f} | {', '.join(f'{x:.2f}' for x in mm)} |"
            f" {max(mm) / min(mm):.2f} |"
        )
    if len(minutes) == 2:
        n = min(len(minutes["edge"]), len(minutes["host"]))
        ratio = [minutes["edge"][i] / minutes["host"][i] for i in range(n)]
        report["edge_over_host_by_minute"] = ratio
        print(
            f"edge / host by minute: {', '.join(f'{r:.2f}' for r in ratio)} (slowest / fastest"
            f" {max(ratio) / min(ratio):.2f})"
        )
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
