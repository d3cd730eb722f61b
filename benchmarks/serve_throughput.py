"""Tail server throughput vs raw ONNX Runtime on the same tail, measured side by side.

    python benchmarks/serve_throughput.py [--clients 1,16] [--seconds 3] [--rounds 3] [--client tritonclient|runner|raw]
        [--model tinyvgg --cut 3 --keep 0.75] [--engines embedded,triton] [--out benchmarks/results/serve_throughput]

Exports a uniform plan's tail, starts `cpcdrl serve` as its own process on
127.0.0.1 and alternates, round after round (so the host's drift hits both
alike): raw ONNX Runtime batch-1 runs of the tail in a process of its own for
``--seconds``, then for each client count that many concurrent clients, each
on its own keep-alive connection, for ``--seconds``. The clients live in
``--client-procs`` processes so their own interpreter lock does not cap them.
Reports per round and the median over rounds: requests/s, the ratio to raw
ORT, client-side p50/p99 latency, and the single-client overhead (client p50
minus the server's own compute p50).
Goal (issue 17): at 16 clients >= 0.5x raw ORT; one client's overhead < 0.25 ms.
``--engines embedded,triton`` serves the tail on both engines at once (Triton
through PyTriton in $CPCDRL_TRITON_PYTHON, ports 8100-8102) and loads each
in turn within every round; Triton's batch sizes are reported at the end.
Goal (issue 40): on a MobileNet tail at 64 clients Triton >= 1.5x the
embedded server's throughput with p99 no worse.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpcdrl_deploy.core.fileio import atomic_write_bytes, atomic_write_json, portable_args  # noqa: E402
from cpcdrl_deploy.deploy.export import export_plan  # noqa: E402
from cpcdrl_deploy.search.optimize import uniform_plan  # noqa: E402
from cpcdrl_deploy.serving.session import CloudServer  # noqa: E402

TOKEN = "bench-token"


def _raw_ort(path: str, shape: list[int], seconds: float, q) -> None:
    """Batch-1 runs of the tail for ``seconds`` in this process: (runs/s, p50 ms)."""
    from cpcdrl_deploy.serving.manifest import ort_session

    sess = ort_session(path, 1)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(50):
        sess.run(None, {name: x})
    times = []
    t_end = time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < t_end:
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    q.put((len(times) / sum(times), 1000.0 * float(np.median(times))))


def _client_proc(
    url: str, model: str, shape: list[int], threads: int, seconds: float, kind: str, start_at: float, q
) -> None:
    """``threads`` clients, each its own connection, sending until the shared deadline; (latencies ms, server compute
    ms, failures)."""
    import threading

    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    out: list[tuple[list[float], list[float], int]] = []
    lock = threading.Lock()

    def one() -> None:
        lat, comp, failed = [], [], 0
        if kind == "tritonclient":
            import tritonclient.http as th

            c = th.InferenceServerClient(url.split("://", 1)[1], connection_timeout=10, network_timeout=10)
            inp = th.InferInput("cut", shape, "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            outs = [th.InferRequestedOutput("logits", binary_data=True)]

            def call():
                r = c.infer(model, [inp], outputs=outs, headers={"Authorization": f"Bearer {TOKEN}"})
                p = r.get_response().get("parameters", {})
                return p.get("cpcdrl_compute_ms")

        elif kind == "raw":  # the request encoded once, bytes over a socket: the server's capacity, least client cost
            import json
            import socket

            host, port = url.split("://", 1)[1].rsplit(":", 1)
            head = json.dumps(
                {
                    "inputs": [
                        {
                            "name": "cut",
                            "datatype": "FP32",
                            "shape": shape,
                            "parameters": {"binary_data_size": x.nbytes},
                        }
                    ],
                    "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
                }
            ).encode()
            req = (
                (
                    f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                    f"Inference-Header-Content-Length: {len(head)}\r\nContent-Length: {len(head) + x.nbytes}\r\n\r\n"
                ).encode()
                + head
                + x.tobytes()
            )
            c = socket.create_connection((host, int(port)), timeout=10)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            f = c.makefile("rb")

            def call():
                c.sendall(req)
                if not f.readline().startswith(b"HTTP/1.1 200"):
                    raise RuntimeError("not a 200")
                n = hl = 0
                while (h := f.readline()) not in (b"\r\n", b""):
                    k, _, v = h.partition(b":")
                    if k.lower() == b"content-length":
                        n = int(v)
                    elif k.lower() == b"inference-header-content-length":
                        hl = int(v)
                body = f.read(n)
                return json.loads(body[:hl]).get("parameters", {}).get("cpcdrl_compute_ms")  # Triton: none

        else:
            from cpcdrl_deploy.ondevice.runner import Remote

            c = Remote(url, model, 10.0, TOKEN)

            def call():
                _, compute_ms, _ = c.infer({"cut": x})
                return compute_ms

        while time.time() < start_at:
            time.sleep(0.001)
        deadline = start_at + seconds
        while time.time() < deadline:
            t0 = time.perf_counter()
            try:
                cm = call()
                lat.append(1000.0 * (time.perf_counter() - t0))
                if cm is not None:
                    comp.append(cm)
            except Exception:  # noqa: BLE001 - counted: the point is how many
                failed += 1
        c.close()
        with lock:
            out.append((lat, comp, failed))

    ts = [threading.Thread(target=one) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    q.put(out)


def _load(url: str, model: str, shape: list[int], clients: int, procs: int, seconds: float, kind: str) -> dict:
    q = mp.get_context("spawn").Queue()
    procs = max(1, min(procs, clients))
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    start_at = time.time() + 2.0  # every client process imported and connected before the clock starts
    ps = [
        mp.get_context("spawn").Process(target=_client_proc, args=(url, model, shape, n, seconds, kind, start_at, q))
        for n in per
    ]
    for p in ps:
        p.start()
    res = [r for _ in ps for r in q.get(timeout=seconds + 120)]
    for p in ps:
        p.join()
    lat = [t for r in res for t in r[0]]
    comp = [t for r in res for t in r[1]]
    return {
        "clients": clients,
        "requests": len(lat),
        "failed": sum(r[2] for r in res),
        "req_per_s": len(lat) / seconds,
        "p50_ms": float(np.percentile(lat, 50)) if lat else None,
        "p99_ms": float(np.percentile(lat, 99)) if lat else None,
        "server_compute_p50_ms": float(np.percentile(comp, 50)) if comp else None,
    }


def _start(engines: list[str], export: Path, server_args: str, max_batch: int = 8, delay_us: int = 500) -> dict:
    """Every engine's server on the export, started before the rounds: {engine: server with .url and .stop()}."""
    servers: dict = {}
    try:
        for e in engines:
            if e == "embedded":
                servers[e] = CloudServer(export, "127.0.0.1", TOKEN, extra_args=server_args.split())
            elif e == "triton":
                from cpcdrl_deploy.serving.triton import TritonServer, tail_specs, triton_python

                servers[e] = TritonServer(
                    tail_specs(export), triton_python(None), port=8100, max_batch=max_batch, queue_delay_us=delay_us
                )
            else:
                raise SystemExit(f"--engines: unknown engine {e!r} (embedded, triton)")
    except BaseException:
        for srv in servers.values():
            srv.stop()
        raise
    return servers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tinyvgg")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data", default="builtin")
    ap.add_argument("--cut", type=int, default=3)
    ap.add_argument("--keep", type=float, default=0.75)
    ap.add_argument("--clients", default="1,16")
    ap.add_argument("--client", choices=("tritonclient", "runner", "raw"), default="tritonclient")
    ap.add_argument(
        "--client-procs",
        type=int,
        default=1,
        help="processes the clients are spread over (1: the clients take one core, the server the other)",
    )
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--server-args", default="", help="extra options for `python -m cpcdrl_deploy.serving.server`")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--engines",
        default="embedded",
        help="comma-separated: embedded (cpcdrl serve), triton (serve --engine triton; $CPCDRL_TRITON_PYTHON)",
    )
    ap.add_argument("--max-batch", type=int, default=8, help="the Triton engine's dynamic batcher: rows per run")
    ap.add_argument("--queue-delay-us", type=int, default=500, help="the Triton engine's dynamic batcher: wait")
    args = ap.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    engines = args.engines.split(",")
    rows: list[dict] = []
    batch_sizes: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        plan = uniform_plan(args.model, args.cut, args.keep, args.checkpoint, args.data).save(Path(tmp) / "plan.json")
        m = export_plan(plan, Path(tmp) / "e", check_images=16)
        tail = m.files["tail"]
        shape = [1, *tail.inputs[0].shape[1:]]
        servers = _start(engines, Path(tmp) / "e", args.server_args, args.max_batch, args.queue_delay_us)
        print(
            f"{args.model} tail after layer {args.cut} (keep {args.keep}): {4 * int(np.prod(shape))} bytes per request;"
            f" engines {', '.join(f'{e} {s.url}' for e, s in servers.items())}; {args.client} clients in"
            f" {args.client_procs} processes; {os.cpu_count()} CPUs",
            flush=True,
        )
        try:
            for rnd in range(args.rounds):
                q = mp.get_context("spawn").Queue()
                p = mp.get_context("spawn").Process(
                    target=_raw_ort, args=(str(Path(tmp) / "e" / tail.file), shape, args.seconds, q)
                )
                p.start()
                raw_rps, raw_p50 = q.get(timeout=args.seconds + 120)
                p.join()
                for engine, srv in servers.items():  # each engine in turn, in every round: drift hits them alike
                    for n in counts:
                        r = _load(srv.url, tail.model_name, shape, n, args.client_procs, args.seconds, args.client)
                        r.update(
                            engine=engine,
                            round=rnd,
                            raw_ort_runs_per_s=raw_rps,
                            raw_ort_p50_ms=raw_p50,
                            ratio_to_raw=r["req_per_s"] / raw_rps,
                        )
                        rows.append(r)
                        print(
                            f"round {rnd}: raw ORT {raw_rps:.0f} runs/s ({raw_p50:.3f} ms); {engine}, {n} clients:"
                            f" {r['req_per_s']:.0f} req/s = {r['ratio_to_raw']:.2f}x raw, p50 {r['p50_ms']:.2f} ms,"
                            f" p99 {r['p99_ms']:.2f} ms, server compute p50"
                            f" {r['server_compute_p50_ms'] or float('nan'):.3f} ms, failed {r['failed']}",
                            flush=True,
                        )
        finally:
            for engine, srv in servers.items():
                sizes = srv.stop()
                if sizes:
                    batch_sizes[engine] = sizes
    if batch_sizes:
        print(f"batch sizes run (size: runs): {batch_sizes}")
    summary = []
    for engine, n in [(e, n) for e in engines for n in counts]:
        rs = [r for r in rows if r["clients"] == n and r["engine"] == engine]
        s = {
            "engine": engine,
            "clients": n,
            "ratio_to_raw_median": statistics.median(r["ratio_to_raw"] for r in rs),
            "req_per_s_median": statistics.median(r["req_per_s"] for r in rs),
            "raw_ort_runs_per_s_median": statistics.median(r["raw_ort_runs_per_s"] for r in rs),
            "p50_ms_median": statistics.median(r["p50_ms"] for r in rs),
            "p99_ms_median": statistics.median(r["p99_ms"] for r in rs),
            "failed": sum(r["failed"] for r in rs),
        }
        with_compute = [r["p50_ms"] - r["server_compute_p50_ms"] for r in rs if r["server_compute_p50_ms"] is not None]
        if n == 1 and with_compute:  # Triton reports no compute time of its own
            s["overhead_ms_median"] = statistics.median(with_compute)
        summary.append(s)
    lines = [
        "| engine | clients | req/s | raw ORT runs/s | ratio | p50 ms | p99 ms | one client's overhead ms | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        ov = f"{s['overhead_ms_median']:.3f}" if "overhead_ms_median" in s else ""
        lines.append(
            f"| {s['engine']} | {s['clients']} | {s['req_per_s_median']:.0f} | {s['raw_ort_runs_per_s_median']:.0f} |"
            f" {s['ratio_to_raw_median']:.2f}x | {s['p50_ms_median']:.2f} | {s['p99_ms_median']:.2f} | {ov} |"
            f" {s['failed']} |"
        )
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            args.out / f"results-{args.client}.json",
            {"args": portable_args(vars(args)), "rounds": rows, "summary": summary, "batch_sizes": batch_sizes},
        )
        atomic_write_bytes(args.out / f"table-{args.client}.md", ("\n".join(lines) + "\n").encode())


if __name__ == "__main__":
    main()
