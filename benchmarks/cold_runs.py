"""Is a model slower when it runs after idle or after another model (as a served request does) than back to back (as
profile times it)?

    python benchmarks/cold_runs.py [--model mobilenet] [--other vgg16] [--seconds 40] [--out \
        benchmarks/results/cold_runs.json]

One ONNX Runtime session, one thread, batch 1, on this host. Four ways of
running it, visited in a shuffled order each round, ten runs per visit (only
the model's own run is timed): back to back ("warm", the profiler's way),
after a 2 ms or a 20 ms sleep (a request that waited for the link), and
right after one run of another model (a bench round, or a server with
several tails). Reported: each way's median, and its paired ratio to warm
(round by round, the median over rounds), so the host's drift cancels.
Why: in the fidelity sittings the server's tails took 1.6-1.9x their table
times and the heads 1.1-1.3x (benchmarks/results/fidelity/README.md).
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from cpcdrl_deploy.core.fileio import atomic_write_json
from cpcdrl_deploy.models.zoo import build_model, get_entry
from cpcdrl_deploy.serving.manifest import ort_session


def onnx_bytes(name: str) -> bytes:
    buf = io.BytesIO()
    size = get_entry(name).input_size
    torch.onnx.export(
        build_model(name).eval(),
        torch.randn(1, 3, size, size),
        buf,
        input_names=["x"],
        output_names=["y"],
        dynamo=False,
    )
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet")
    ap.add_argument("--other", default="vgg16")
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--out", default="benchmarks/results/cold_runs.json")
    args = ap.parse_args()
    sess, other = ort_session(onnx_bytes(args.model)), ort_session(onnx_bytes(args.other))
    size = get_entry(args.model).input_size
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    xo = (
        np.random.default_rng(1)
        .standard_normal((1, 3, get_entry(args.other).input_size, get_entry(args.other).input_size))
        .astype(np.float32)
    )

    def run(way: str) -> float:
        if way == "after 2 ms idle":
            time.sleep(0.002)
        elif way == "after 20 ms idle":
            time.sleep(0.02)
        elif way == "after another model":
            other.run(None, {"x": xo})
        t = time.perf_counter()
        sess.run(None, {"x": x})
        return (time.perf_counter() - t) * 1000.0

    ways = ["warm", "after 2 ms idle", "after 20 ms idle", "after another model"]
    for _ in range(20):
        run("warm")
    per: dict[str, list[float]] = {w: [] for w in ways}
    rng = random.Random(0)
    end = time.time() + args.seconds
    while time.time() < end:
        order = list(ways)
        rng.shuffle(order)
        for w in order:
            per[w].append(statistics.median(run(w) for _ in range(10)))
    warm = np.array(per["warm"])
    rows = {
        w: {"median_ms": float(np.median(v)), "paired_ratio_to_warm": float(np.median(np.array(v) / warm))}
        for w, v in per.items()
    }
    doc = {
        "model": args.model,
        "other": args.other,
        "rounds": len(warm),
        "threads": 1,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ways": rows,
    }
    atomic_write_json(Path(args.out), doc)
    for w, r in rows.items():
        print(
            f"{w:20s} median {r['median_ms']:.3f} ms, paired ratio to warm {r['paired_ratio_to_warm']:.3f} ({len(warm)}"
            " rounds)"
        )


if __name__ == "__main__":
    main()
