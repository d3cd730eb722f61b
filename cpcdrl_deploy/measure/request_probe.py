"""What one KServe v2 request costs on the link beyond bytes / bandwidth + RTT, measured with the deployment's own code.

The SSH measurements of ``profiling.measure_link`` (a streamed transfer's
slope, a one-byte echo) price a cut tensor as ``bytes / B + RTT``. A deployed
request may also pay for HTTP framing, the edge runner building the request on
the device's CPU, the server's request path and TCP on the shaped link. On the
emulated Pi at 1 MB/s, requests took about 2 ms more than the estimates said
(benchmarks/results/fidelity/README.md); this probe is how the profile tells
the link's share of that from the compute's.

So ``cpcdrl profile`` can time real requests: the edge runner (the file
``deploy`` uploads) sends payloads of a few sizes to the server ``deploy``
starts, interleaved as ``bench`` does, each "plan" a head that only reshapes
the image into a payload of its size and a tail that only sums it. The
round trips' medians against the payload size give a slope (the protocol's
bandwidth) and an intercept; the link keeps ``request_overhead_ms`` =
intercept - RTT and, with it, the protocol's bandwidth as its uplink.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.models.zoo import file_sha256

SIZES = (512, 4_096, 16_384, 65_536)  # payload bytes: the cut tensors of the zoo's plans span about 1-130 KB
IMAGE = (1, 3, 32, 32)
Log = Callable[[str], None]


def _head(n_floats: int) -> bytes:
    """x [1,3,32,32] -> cut [1, n_floats]: the image flattened, tiled and sliced; nothing a device would notice."""
    from onnx import TensorProto, helper

    flat = int(np.prod(IMAGE))
    reps = max(1, math.ceil(n_floats / flat))
    c = lambda name, vals: helper.make_node(
        "Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(vals)], vals)
    )  # noqa: E731
    nodes = [
        c("shape", [1, flat]),
        c("reps", [1, reps]),
        c("starts", [0]),
        c("ends", [n_floats]),
        c("axes", [1]),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Tile", ["flat", "reps"], ["tiled"]),
        helper.make_node("Slice", ["tiled", "starts", "ends", "axes"], ["cut"]),
    ]
    g = helper.make_graph(
        nodes,
        "request_probe_head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(IMAGE))],
        [helper.make_tensor_value_info("cut", TensorProto.FLOAT, [1, n_floats])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _tail(n_floats: int) -> bytes:
    """cut [batch, n_floats] -> logits [batch, 1]: a sum, so the server's compute is next to nothing."""
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("ReduceSum", ["cut"], ["logits"], keepdims=1, axes=[1])],
        "request_probe_tail",
        [helper.make_tensor_value_info("cut", TensorProto.FLOAT, [-1, n_floats])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [-1, 1])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)], ir_version=8).SerializeToString()


def build_probe_exports(root: Path, sizes: tuple[int, ...] = SIZES) -> list[tuple[int, Path, Path]]:
    """One export directory (tail + manifest, as ``export`` writes them) and one head file per payload size."""
    import onnx

    from cpcdrl_deploy.serving.manifest import ExportManifest, ModelFile, io_specs

    out = []
    for size in sizes:
        n = max(1, size // 4)
        d = root / f"s{size}"
        d.mkdir(parents=True, exist_ok=True)
        tail = _tail(n)
        (d / "tail.onnx").write_bytes(tail)
        (root / f"head_s{size}.onnx").write_bytes(_head(n))
        specs = io_specs(onnx.load_from_string(tail))
        tail_file = ModelFile(file="tail.onnx", sha256=file_sha256(d / "tail.onnx"), model_name="tail", **specs)
        ExportManifest(purpose="cpcdrl profile: request probe", files={"tail": tail_file}).save(d / "manifest.json")
        out.append((n * 4, root / f"head_s{size}.onnx", d))
    return out


def fit(points: list[tuple[int, float]], rtt_ms: float) -> dict:
    """Line through (bytes sent, median ms), least relative squares: the protocol's bandwidth, and its intercept less
    the RTT."""
    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    if len(points) < 2 or np.ptp(x) == 0:
        raise CpcdrlError("the request probe needs at least two payload sizes")
    slope, intercept = np.polyfit(
        x, y, 1, w=1.0 / y
    )  # relative errors: at 200 KB/s a 64 KB request's noise would swamp a 0.5 KB one
    if slope <= 0:
        raise CpcdrlError(
            f"the request probe measured no cost per byte (slope {slope:.3g} ms/B): the link is too noisy to fit"
        )
    return {
        "bytes_per_s": 1000.0 / slope,
        "intercept_ms": float(intercept),
        "request_overhead_ms": max(0.0, float(intercept) - rtt_ms),
        "points": [{"bytes": int(b), "median_ms": float(m)} for b, m in points],
    }


def measure_request_link(dev, bind: str, rtt_ms: float, seconds: float = 1.5, log: Log = lambda s: None) -> dict:
    """Time KServe v2 requests of several payload sizes from ``dev`` to a server on this host at ``bind``; see
    ``fit``."""
    res = fit(time_requests(dev, bind, seconds, log), rtt_ms)
    log(
        "request probe: "
        + ", ".join(f"{p['bytes']} B {p['median_ms']:.2f} ms" for p in res["points"])
        + f" -> {res['bytes_per_s'] / 1e3:.1f} KB/s, {res['request_overhead_ms']:.2f} ms per request beyond the RTT"
    )
    return res


def time_requests(dev, bind: str, seconds: float = 1.5, log: Log = lambda s: None) -> list[tuple[int, float]]:
    """(bytes sent, median round trip ms) per payload size: the edge runner's bench mode against a server at
    ``bind``."""
    from cpcdrl_deploy.measure.runtimes import check_runtime
    from cpcdrl_deploy.serving.session import InterleavedPlan, run_interleaved

    check_runtime(dev, "onnxruntime")  # the probe's heads are ONNX: one line naming the package if it is missing
    with tempfile.TemporaryDirectory(prefix="cpcdrl-request-probe-") as tmp:
        root = Path(tmp)
        probes = build_probe_exports(root)
        np.save(root / "inputs.npy", np.random.default_rng(0).standard_normal((8, *IMAGE[1:])).astype(np.float32))
        spec = [InterleavedPlan(f"s{size}", head, folder, "logits") for size, head, folder in probes]
        log(f"request probe: {len(spec)} payload sizes, interleaved, {seconds:g} s each")
        runner = run_interleaved(
            dev,
            bind,
            spec,
            root / "inputs.npy",
            [f"--seconds {seconds:g}", "--min-rounds 5"],
            budget_s=120.0 + len(spec) * 8 * seconds,
            close=False,
        )  # profile_host owns the connection
    if runner["failed"]:
        raise CpcdrlError(f"request probe failed: {'; '.join(f'{k}: {v}' for k, v in runner['failed'].items())}")
    points = []
    for size, _, _ in probes:
        ok = [r for r in runner["records"] if r["plan"] == f"s{size}" and "remote_ms" in r]
        if not ok:
            raise CpcdrlError(f"request probe: no request of {size} bytes was answered")
        # bytes as sent (tensor + the protocol's JSON header), as deploy and bench price a request
        points.append((int(np.median([r["bytes_sent"] for r in ok])), float(np.median([r["remote_ms"] for r in ok]))))
    return points
