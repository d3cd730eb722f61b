"""A normal client's latency while other clients drip request heads, against the served tail, side by side.

    python benchmarks/slow_clients.py [--drippers 0,70,100] [--requests 200] [--rounds 3] \
        [--out benchmarks/results/slow_clients]

Exports the built-in model's tail (a uniform plan), starts `cpcdrl serve` as
its own process on 127.0.0.1 and, round after round, for each dripper count
in turn (so the host's drift hits every count alike): opens that many
connections that each send a request line and then one header byte a
second (never silent long enough for the idle time-out), waits a second,
then sends ``--requests`` infer requests from one normal client, each on a
new connection (a refused connection counts as failed), and closes the
drippers. Reports per count: the normal client's p50 and p99 and its
failed requests. Goal (issue 40): with 100 dripping connections every
request answered, p99 under 100 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpcdrl_deploy.core.fileio import atomic_write_json, portable_args  # noqa: E402
from cpcdrl_deploy.deploy.export import export_plan  # noqa: E402
from cpcdrl_deploy.search.optimize import uniform_plan  # noqa: E402
from cpcdrl_deploy.serving.session import CloudServer  # noqa: E402

TOKEN = "bench-token"


def _drippers(host: str, port: int, n: int, stop: threading.Event) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"POST /v2/models/x/infer HTTP/1.1\r\n")
        socks.append(s)

    def drip() -> None:
        while not stop.wait(1.0):
            for s in socks:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass

    threading.Thread(target=drip, daemon=True).start()
    return socks


def _normal(host: str, port: int, model: str, body: bytes, n: int) -> tuple[list[float], int]:
    """``n`` requests, each on a new connection: (latencies of the answered ones in ms, failed)."""
    took, failed = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            c = http.client.HTTPConnection(host, port, timeout=5)
            c.request("POST", f"/v2/models/{model}/infer", body, {"Authorization": f"Bearer {TOKEN}"})
            r = c.getresponse()
            r.read()
            c.close()
            if r.status != 200:
                failed += 1
                continue
        except OSError:
            failed += 1
            continue
        took.append((time.perf_counter() - t0) * 1000.0)
    return took, failed


def _q(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * (len(s) - 1) + 0.5))] if s else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drippers", default="0,70,100")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    counts = [int(c) for c in args.drippers.split(",")]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = uniform_plan("tinysplit", 2, 1.0, None, "builtin").save(Path(tmp) / "plan.json")
        tail = export_plan(plan, Path(tmp) / "e", check_images=16).files["tail"]
        shape = [1, *tail.inputs[0].shape[1:]]
        data = [0.0] * int(np.prod(shape))
        body = json.dumps({"inputs": [{"name": tail.inputs[0].name, "datatype": "FP32", "shape": shape, "data": data}]})
        srv = CloudServer(Path(tmp) / "e", "127.0.0.1", TOKEN)
        host, port = srv.url.split("//", 1)[1].rsplit(":", 1)
        try:
            for rnd in range(args.rounds):
                for n in counts:
                    stop = threading.Event()
                    socks = _drippers(host, int(port), n, stop)
                    time.sleep(1.0)
                    took, failed = _normal(host, int(port), tail.model_name, body.encode(), args.requests)
                    stop.set()
                    for s in socks:
                        s.close()
                    row = {"round": rnd, "drippers": n, "p50_ms": _q(took, 0.5), "p99_ms": _q(took, 0.99)}
                    rows.append(row | {"answered": len(took), "failed": failed})
                    print(
                        f"round {rnd}: {n} dripping: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms,"
                        f" failed {failed} of {args.requests}",
                        flush=True,
                    )
                    time.sleep(0.5)
        finally:
            srv.stop()
    summary = [
        {
            "drippers": n,
            "p50_ms_median": statistics.median(r["p50_ms"] for r in rows if r["drippers"] == n),
            "p99_ms_median": statistics.median(r["p99_ms"] for r in rows if r["drippers"] == n),
            "failed": sum(r["failed"] for r in rows if r["drippers"] == n),
            "requests": args.requests * args.rounds,
        }
        for n in counts
    ]
    for s in summary:
        print(
            f"{s['drippers']} dripping: p50 {s['p50_ms_median']:.2f} ms, p99 {s['p99_ms_median']:.2f} ms (medians"
            f" over rounds), failed {s['failed']} of {s['requests']}"
        )
    if args.out:
        atomic_write_json(
            args.out / "results.json", {"args": portable_args(vars(args)), "rounds": rows, "summary": summary}
        )


if __name__ == "__main__":
    main()
