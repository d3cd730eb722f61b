"""Runs ON THE DEVICE (a Raspberry Pi or the cloud host): time ONNX models with ONNX Runtime, or LiteRT ones.

Needs only Python 3, numpy and the runtime of the files it times: onnxruntime
for ``.onnx``, ai-edge-litert (or tflite-runtime) for ``.tflite``; no torch,
no cpcdrl. cpcdrl
uploads this file and the models into a temporary directory, runs

    python3 timer.py facts
    python3 timer.py time JOB.json --threads 1 --warmup 5 --repeats 20

and reads one JSON object per line from stdout. Each job is
``{"id", "file", "input_shape"}`` and optionally ``"cold_gap_ms"`` (see
``cold_runs``); ``file`` may be gzip-compressed (``.gz``):
the models carry constant weights, which latency does not depend on and which
compress to almost nothing over a slow link.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import sys
import time


def facts() -> dict:
    """What a profile must say about the host that measured it."""
    import numpy

    def version(*names: str) -> str | None:
        for n in names:
            try:
                return getattr(__import__(n), "__version__", "present")
            except ImportError:
                pass
        return None

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    governor = None
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") as f:
            governor = f.read().strip()
    except OSError:
        pass
    quota = None
    for path in ("/sys/fs/cgroup/cpu.max",):
        try:
            with open(path) as f:
                quota = f.read().strip()
        except OSError:
            pass
    try:
        with open("/proc/self/cgroup") as f:
            cg = [
                parts[2]
                for parts in (line.strip().split(":", 2) for line in f)
                if len(parts) == 3 and "cpu" in parts[1].split(",")
            ]
        if cg and cg[0] not in ("/", ""):
            base = "/sys/fs/cgroup/cpu" + cg[0]
            with open(base + "/cpu.cfs_quota_us") as q, open(base + "/cpu.cfs_period_us") as p:
                quota = f"{q.read().strip()} {p.read().strip()}"
    except (OSError, IndexError):
        pass
    hz = None  # the scheduler tick: a CPU quota is enforced at tick granularity
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            hz = next((int(line.split("=")[1]) for line in f if line.startswith("CONFIG_HZ=")), None)
    except (OSError, ValueError):
        pass
    return {
        "hostname": platform.node(),
        "kernel_hz": hz,
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "memory_bytes": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "onnxruntime": version("onnxruntime"),
        "litert": version("ai_edge_litert", "tflite_runtime"),
        "cpu_governor": governor,
        "cpu_quota": quota,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class _Input:
    name = "x"


class LiteRTSession:
    """A ``.tflite`` model behind the two calls of an ONNX Runtime session that the timing uses."""

    def __init__(self, data: bytes, threads: int) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            from tflite_runtime.interpreter import Interpreter
        self.it = Interpreter(model_content=data, num_threads=threads)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]["index"]
        self.dtype = self.it.get_input_details()[0]["dtype"]
        self.outs = [o["index"] for o in self.it.get_output_details()]

    def get_inputs(self) -> list:
        return [_Input()]

    def run(self, _names, feeds: dict):
        x = next(iter(feeds.values()))
        # a fully int8 model (LiteRT's static int8 recipe) takes int8: the timing's values do not matter
        self.it.set_tensor(self.inp, x.astype(self.dtype) if x.dtype != self.dtype else x)
        self.it.invoke()
        return [self.it.get_tensor(i) for i in self.outs]


def load_session(path: str, threads: int):
    data = open(path, "rb").read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    if path.endswith((".tflite", ".tflite.gz")):
        return LiteRTSession(data, threads)
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # what deployment uses
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def time_session(sess, shape: list[int], warmup: int, repeats: int, min_time_s: float = 0.2) -> dict:
    """Per-run times (median, p10, p90) and the sustained mean over >= ``min_time_s``.

    The mean over a window of many scheduler periods is what a CPU quota (an
    emulated device, a throttled container) really allows: a short run may fit
    in one period's quota and time as fast as an unthrottled core, so per-run
    medians flatter it. On an unthrottled device the two agree.
    """
    import numpy as np

    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(warmup):
        sess.run(None, {name: x})
    ts: list[float] = []
    start = time.perf_counter()
    while len(ts) < repeats or time.perf_counter() - start < min_time_s:
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        ts.append((time.perf_counter() - t0) * 1000.0)
    mean = (time.perf_counter() - start) * 1000.0 / len(ts)
    ts.sort()

    def q(p: float) -> float:
        return ts[min(len(ts) - 1, int(p * (len(ts) - 1) + 0.5))]

    return {
        "mean_ms": mean,
        "median_ms": q(0.5),
        "p10_ms": q(0.1),
        "p90_ms": q(0.9),
        "min_ms": ts[0],
        "repeats": len(ts),
    }


COLD_RUNS_PER_ROUND = 6


def cold_runs(sess, shape: list[int], gap_ms: float, n: int) -> list[float]:
    """``n`` runs, each alone after ``gap_ms`` of sleep: how a served request finds the model.

    A request's model runs after the device (or server) sat idle while the
    rest of the request crossed the link, not right after its own last run as
    the back-to-back timing has it, and such a run is slower (measured in
    benchmarks/results/cold_runs.json).
    """
    import numpy as np

    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = []
    for _ in range(n):
        time.sleep(gap_ms / 1000.0)
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def time_jobs(
    jobs: list[dict], base: str, threads: int, warmup: int, repeats: int, min_time_s: float, rounds: int
) -> list[dict]:
    """Time every job ``rounds`` times, one pass over all jobs per round; report each job's middle rounds.

    Why rounds: the machine's own speed wanders. On this project's 2-core VMs
    a MobileNet head timed 0.72-0.77 ms in most half-second blocks and
    0.90-1.00 ms in slow spells of 0.5-5 s, and on a later VM the whole model's
    100 ms windows spread over 1.5-3.1 ms (median 2.05) with nothing else
    running. One long window per layer lands wholly in a spell or not, so
    neighbouring entries of a table differed by 30 % for no reason of their
    own. Why the middle (the median round: the mean of the two middle ones
    for an even count) and not the fastest: a deployment's p50 is taken over
    whatever spells come, and the fastest of four windows ran 20 % below the
    median window on that VM (the deployed requests 60-90 % above the
    profile on the emulated Pi). Every round's mean is kept in
    ``round_means_ms``.

    A job with ``cold_gap_ms`` is also run ``COLD_RUNS_PER_ROUND`` times per
    round after that much idle (``cold_runs``), in the same rounds, so the
    two timings see the same spells: ``cold_median_ms`` is their median.
    """
    sessions = [load_session(os.path.join(base, j["file"]), threads) for j in jobs]
    runs: list[list[dict]] = [[] for _ in jobs]
    cold: list[list[float]] = [[] for _ in jobs]
    for r in range(rounds):
        for i, (job, sess) in enumerate(zip(jobs, sessions)):
            runs[i].append(
                time_session(
                    sess, job["input_shape"], warmup if r == 0 else 1, max(1, repeats // rounds), min_time_s / rounds
                )
            )
            if job.get("cold_gap_ms"):
                cold[i] += cold_runs(sess, job["input_shape"], float(job["cold_gap_ms"]), COLD_RUNS_PER_ROUND)
    out = []
    for j, rs, cs in zip(jobs, runs, cold):
        res = {"id": j["id"], **middle_round(rs), "round_means_ms": [x["mean_ms"] for x in rs]}
        if cs:
            cs.sort()
            res.update(
                cold_median_ms=(cs[(len(cs) - 1) // 2] + cs[len(cs) // 2]) / 2,
                cold_gap_ms=float(j["cold_gap_ms"]),
                cold_runs=len(cs),
            )
        out.append(res)
    return out


def middle_round(results: list[dict]) -> dict:
    """The median round by its mean: one round's figures for an odd count, the two middle rounds' averaged for an
    even one."""
    ranked = sorted(results, key=lambda x: x["mean_ms"])
    n = len(ranked)
    mid = ranked[(n - 1) // 2 : n // 2 + 1]
    out = dict(mid[0])
    for k in ("mean_ms", "median_ms", "p10_ms", "p90_ms", "min_ms"):
        out[k] = sum(x[k] for x in mid) / len(mid)
    out["repeats"] = sum(x["repeats"] for x in mid)
    return out


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("facts", "time"):
        print(
            "usage: timer.py facts | time JOB.json [--threads N] [--warmup N] [--repeats N] [--min-time-ms N]"
            " [--rounds N]",
            file=sys.stderr,
        )
        return 2
    if argv[0] == "facts":
        print(json.dumps(facts()))
        return 0
    opts = {"--threads": 1, "--warmup": 5, "--repeats": 20, "--min-time-ms": 200, "--rounds": 2}
    rest = argv[2:]
    for i in range(0, len(rest) - 1, 2):
        if rest[i] in opts:
            opts[rest[i]] = int(rest[i + 1])
    with open(argv[1]) as f:
        jobs = json.load(f)
    base = os.path.dirname(os.path.abspath(argv[1]))
    for res in time_jobs(
        jobs,
        base,
        opts["--threads"],
        opts["--warmup"],
        opts["--repeats"],
        opts["--min-time-ms"] / 1000.0,
        max(1, opts["--rounds"]),
    ):
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
