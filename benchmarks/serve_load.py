"""Load on the KServe v2 server: several concurrent clients on loopback, bounded request count.

    python benchmarks/serve_load.py [--clients 1,4,8] [--requests 200] [--model mobilenet --checkpoint F --cut 12]

Exports a uniform plan (default: the built-in tinyvgg cut after layer 3, keep
0.75), starts `cpcdrl serve` as its own process on 127.0.0.1, and for each
client count sends requests/client binary-protocol requests per client, each
client on its own keep-alive connection (the edge runner's client code).
Prints throughput, p50 and p99 latency and failures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cpcdrl_deploy.deploy import CloudServer
from cpcdrl_deploy.edge_runner import Remote
from cpcdrl_deploy.export import export_plan
from cpcdrl_deploy.fileio import atomic_write_json
from cpcdrl_deploy.optimize import uniform_plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tinyvgg")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data", default="builtin")
    ap.add_argument("--cut", type=int, default=3)
    ap.add_argument("--keep", type=float, default=0.75)
    ap.add_argument("--clients", default="1,4,8")
    ap.add_argument("--requests", type=int, default=200, help="per client")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads in the server")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plan = atomic_write_json(Path(tmp) / "plan.json", uniform_plan(args.model, args.cut, args.keep, args.checkpoint, args.data))
        m = export_plan(plan, Path(tmp) / "e", check_images=16)
        tail = m["files"]["tail"]
        x = np.random.default_rng(0).standard_normal([1, *tail["inputs"][0]["shape"][1:]]).astype(np.float32)
        srv = CloudServer(Path(tmp) / "e", "127.0.0.1", "bench-token", threads=args.threads)
        try:
            print(f"{args.model} tail after layer {args.cut}: {x.nbytes} bytes per request, server {srv.url}")
            print("| clients | requests | failed | throughput req/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|")
            for n in (int(c) for c in args.clients.split(",")):

                def client(_: int) -> tuple[list[float], int]:
                    r = Remote(srv.url, tail["model_name"], 10.0, "bench-token")
                    times, failed = [], 0
                    for _ in range(args.requests):
                        t0 = time.perf_counter()
                        try:
                            r.infer({"cut": x})
                            times.append((time.perf_counter() - t0) * 1000.0)
                        except Exception:  # noqa: BLE001 - counted, not raised: the point is how many
                            failed += 1
                    r.close()
                    return times, failed

                t0 = time.perf_counter()
                with ThreadPoolExecutor(n) as pool:
                    results = list(pool.map(client, range(n)))
                wall = time.perf_counter() - t0
                times = [t for ts, _ in results for t in ts]
                failed = sum(f for _, f in results)
                print(f"| {n} | {n * args.requests} | {failed} | {len(times) / wall:.0f} | {np.percentile(times, 50):.2f} | {np.percentile(times, 99):.2f} |")
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
