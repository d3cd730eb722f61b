"""The edge half of a deployed split: runs on the device with only numpy and one runtime.

    python3 runner.py --inputs x.npy --head head.onnx --url http://HOST:PORT --model NAME --out report.json

The head's suffix picks the runtime (``load_model``): ``.onnx`` runs in ONNX
Runtime, ``.tflite`` in LiteRT (``ai-edge-litert``); a device needs only the
one its head uses. For each input image (batch 1, in order): run the head (edge compute),
send its outputs to the cloud server as a KServe v2 infer request with the
binary tensor data extension (``tritonclient`` and Triton speak the same), and
read the logits back. Per request it records edge compute, transfer + cloud
(the HTTP round trip), end to end, bytes sent and the server's own compute time
when the server reports it (``cpcdrl_compute_ms``; Triton does not).

Every network call has a time-out (``--timeout``). When the server cannot be
reached and ``--fallback local`` is given with ``--full full.onnx``, the image
is answered on the device and the request is marked ``fallback``. Without a
fallback, ``--max-failures`` consecutive failures end the run; the report says
why. This file is copied to the device alone: it imports nothing from cpcdrl.

``--probe probe.onnx.gz`` times a fixed reference model (the whole unpruned
model, as ``cpcdrl profile`` timed it) before the first request, after every
``--probe-every`` requests and after the last, with the profiler's own timing
code (``timer.py``, copied beside this file): the device's speed now
against its speed when it was profiled, measured in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import numpy as np

try:  # in the package on the host
    from cpcdrl_deploy.ondevice import adapt, prepare
    from cpcdrl_deploy.ondevice.datatypes import FROM_ORT, NAMES, NUMPY
except ImportError:  # on the device: datatypes.py, adapt.py and prepare.py lie beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    _datatypes = importlib.import_module("datatypes")
    adapt = importlib.import_module("adapt")
    prepare = importlib.import_module("prepare")
    FROM_ORT, NAMES, NUMPY = _datatypes.FROM_ORT, _datatypes.NAMES, _datatypes.NUMPY
MAX_REPLY = 16 * 1024 * 1024  # bytes: logits are a few dozen; anything near this is not a reply to us


class BadReply(RuntimeError):
    """A reply the runner cannot use: counted as a failed request, like a refused connection."""


def parse_reply(data: bytes, header_len: str | None, output: str) -> tuple[np.ndarray, float | None]:
    """The named output of a KServe v2 reply (JSON or binary tensor data), validated; BadReply otherwise."""
    try:
        hl = None if header_len is None else int(header_len)
        if hl is not None and not 0 < hl <= len(data):
            raise BadReply(f"Inference-Header-Content-Length {header_len} outside the {len(data)}-byte reply")
        head = json.loads(data[:hl] if hl else data)
        outs = head.get("outputs") if isinstance(head, dict) else None
        if not isinstance(outs, list) or not outs:
            raise BadReply("reply has no outputs")
        out = next((o for o in outs if isinstance(o, dict) and o.get("name") == output), outs[0])
        if not isinstance(out, dict) or out.get("datatype") not in NUMPY:
            raise BadReply(
                f"reply output datatype {out.get('datatype') if isinstance(out, dict) else out!r} is not one of"
                f" {sorted(NUMPY)}"
            )
        shape = out.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BadReply(f"reply output shape {shape!r} is not a list of sizes")
        count = int(np.prod(shape)) if shape else 1
        dtype = np.dtype(NUMPY[out["datatype"]])
        if hl:
            size = (out.get("parameters") or {}).get("binary_data_size", count * dtype.itemsize)
            offset = hl  # the first (only requested) output's blob follows the header
            if size != count * dtype.itemsize or offset + size > len(data):
                raise BadReply(f"binary reply holds {len(data) - offset} bytes for {count} x {dtype.itemsize}")
            arr = np.frombuffer(data, dtype=dtype, offset=offset, count=count).reshape(shape)
        else:
            arr = np.asarray(out.get("data"), dtype=dtype)
            if arr.size != count:
                raise BadReply(f"reply holds {arr.size} values for shape {shape}")
            arr = arr.reshape(shape)
        params = head.get("parameters")
        ms = params.get("cpcdrl_compute_ms") if isinstance(params, dict) else None
        return arr, ms if isinstance(ms, (int, float)) else None
    except BadReply:
        raise
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise BadReply(f"malformed reply: {type(exc).__name__}: {str(exc)[:150]}") from None


def encode_request(tensors: dict[str, np.ndarray], output: str, request_id: str) -> tuple[bytes, int]:
    """A KServe v2 infer request with binary tensors: (body, length of its JSON header)."""
    inputs, blobs = [], []
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr).tobytes()
        inputs.append(
            {
                "name": name,
                "shape": list(arr.shape),
                "datatype": NAMES[arr.dtype],
                "parameters": {"binary_data_size": len(b)},
            }
        )
        blobs.append(b)
    header = json.dumps(
        {"id": request_id, "inputs": inputs, "outputs": [{"name": output, "parameters": {"binary_data": True}}]}
    ).encode()
    return header + b"".join(blobs), len(header)


class Remote:
    """One keep-alive HTTP connection to a KServe v2 server; reconnects after a failure."""

    def __init__(self, url: str, model: str, timeout: float, token: str | None, output: str = "logits") -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"--url must be http://HOST:PORT or https://HOST[:PORT], got {url!r}")
        self.host, self.port = u.hostname, u.port or (443 if u.scheme == "https" else 80)
        # https: behind a TLS-terminating proxy; the default context verifies the certificate and the host name
        self.connection_class = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        self.path = f"/v2/models/{model}/infer"
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.output = output
        self.conn: http.client.HTTPConnection | None = None
        self.sent = 0  # request ids: KServe's response type requires one, Triton echoes it

    def infer(self, tensors: dict[str, np.ndarray]) -> tuple[np.ndarray, float | None, int]:
        """(first output, server compute ms or None, bytes sent)."""
        body, header_len = encode_request(tensors, self.output, str(self.sent + 1))
        self.sent += 1
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_len),
            **self.headers,
        }
        status, data, reply_header_len = self._post(body, headers)
        if status != 200:
            try:
                msg = json.loads(data).get("error", data[:200])
            except (ValueError, AttributeError, RecursionError):
                msg = data[:200]
            raise RuntimeError(f"server answered {status}: {msg}")
        try:
            arr, ms = parse_reply(data, reply_header_len, self.output)
        except BadReply:
            self.close()  # the connection's framing can no longer be trusted
            raise
        return arr, ms, len(body)

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
        """(status, reply body, its Inference-Header-Content-Length) over the kept-alive connection, within the
        timeout."""
        if self.conn is None:
            self.conn = self.connection_class(self.host, self.port, timeout=self.timeout)
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle wait on small requests
        # --timeout bounds the whole request, not each socket read: a server trickling its reply byte by byte
        # would otherwise hold us timeout x bytes. At the deadline the socket is shut, and the read fails.
        conn = self.conn
        fired = threading.Event()
        timer = threading.Timer(self.timeout, _shut, (conn, fired))
        timer.start()
        try:
            conn.request("POST", self.path, body, headers)
            resp = conn.getresponse()
            length = resp.getheader("Content-Length")
            if length is not None and (not length.isdigit() or int(length) > MAX_REPLY):
                raise BadReply(f"reply of {length} bytes refused (limit {MAX_REPLY})")
            data = resp.read(MAX_REPLY + 1)
            if len(data) > MAX_REPLY:
                raise BadReply(f"reply over {MAX_REPLY} bytes refused")
            if fired.is_set() or (length is not None and len(data) < int(length)):
                raise TimeoutError(f"no complete reply within {self.timeout:g} s")
        except (OSError, http.client.HTTPException, BadReply) as exc:
            self.close()
            if fired.is_set() and not isinstance(exc, BadReply):
                raise TimeoutError(f"no complete reply within {self.timeout:g} s") from None
            raise
        finally:
            timer.cancel()
        return resp.status, data, resp.getheader("Inference-Header-Content-Length")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def model_metadata(remote: Remote, model: str) -> dict:
    """The server's model metadata (GET /v2/models/NAME): what it will accept."""
    conn = remote.connection_class(remote.host, remote.port, timeout=remote.timeout)
    try:
        conn.request("GET", f"/v2/models/{model}", headers=remote.headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"server answered {resp.status} for model {model!r}: {data[:200]!r}")
    try:
        meta = json.loads(data[:MAX_REPLY])
    except (ValueError, RecursionError):
        raise BadReply(f"model metadata is not JSON: {data[:100]!r}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("inputs", []), list):
        raise BadReply("model metadata is not a KServe v2 model object")
    return meta


def _shut(conn: http.client.HTTPConnection, fired: threading.Event) -> None:
    fired.set()
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _onnx_type(t: str) -> str:
    """ONNX Runtime's 'tensor(float)' as a KServe datatype."""
    return FROM_ORT.get(t, t)


class MissingRuntime(RuntimeError):
    """The device lacks the package a model file needs: the message names what to install."""


class OrtModel:
    """An ``.onnx`` model in ONNX Runtime, one intra-op thread pool of ``threads``."""

    runtime = "onnxruntime"

    def __init__(self, path: str, threads: int) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingRuntime(
                f"{os.path.basename(path)} needs ONNX Runtime: python3 -m pip install onnxruntime"
            ) from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name
        self.outputs = [(o.name, _onnx_type(o.type), list(o.shape)) for o in self.sess.get_outputs()]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {name: v for (name, _, _), v in zip(self.outputs, self.sess.run(None, {self.input: x}))}


class LiteRTModel:
    """A ``.tflite`` model in LiteRT (``ai-edge-litert``; ``tflite-runtime`` as a fallback), batch 1.

    Its one output is named ``cut``, the tail's input: LiteRT names tensors
    after the converter's signature, not after the ONNX graph.
    """

    runtime = "litert"

    def __init__(self, path: str, threads: int, output: str = "cut") -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter  # the old package (2.14, numpy < 2)
            except ImportError:
                raise MissingRuntime(
                    f"{os.path.basename(path)} needs LiteRT: python3 -m pip install ai-edge-litert"
                ) from None
        self.it = Interpreter(model_path=path, num_threads=threads)
        self.it.allocate_tensors()
        ins, outs = self.it.get_input_details(), self.it.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(
                f"{os.path.basename(path)}: expected one input and one output, found {len(ins)} and {len(outs)}"
            )
        self.inp, self.out = ins[0], outs[0]
        # a fully int8 model (static int8 export) takes and returns int8 with one scale / zero point:
        # quantise the float image and dequantise the cut tensor here, so the wire and tail stay float
        self.q_in, self.q_out = _int_quant(self.inp), _int_quant(self.out)
        dtype = np.float32 if self.q_out else np.dtype(self.out["dtype"])
        self.outputs = [(output, NAMES[np.dtype(dtype)], [int(d) for d in self.out["shape"]])]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.q_in:
            scale, zp = self.q_in
            info = np.iinfo(self.inp["dtype"])
            x = np.clip(np.round(np.asarray(x, np.float32) / scale) + zp, info.min, info.max)
        self.it.set_tensor(self.inp["index"], np.ascontiguousarray(x, dtype=self.inp["dtype"]))
        self.it.invoke()
        y = self.it.get_tensor(self.out["index"])
        if self.q_out:
            scale, zp = self.q_out
            return {
                self.outputs[0][0]: ((y.astype(np.float32) - np.float32(zp)) * np.float32(scale)).astype(np.float32)
            }
        return {self.outputs[0][0]: y.copy()}


def _int_quant(detail: dict) -> tuple[float, int] | None:
    """(scale, zero point) of an integer tensor a quantised LiteRT model exposes, else None."""
    scale, zp = detail.get("quantization") or (0.0, 0)
    if np.issubdtype(np.dtype(detail["dtype"]), np.integer) and scale:
        return float(scale), int(zp)
    return None


def load_model(path: str, threads: int = 1) -> OrtModel | LiteRTModel:
    """The model file in the runtime its suffix names: ``.onnx`` (ONNX Runtime) or ``.tflite`` (LiteRT)."""
    if path.endswith(".tflite"):
        return LiteRTModel(path, threads)
    return OrtModel(path, threads)


def load_inputs(args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    """The model's inputs: ``--inputs`` as given (float32, prepared) or uint8 frames prepared here by ``--preprocess``.

    Frames are prepared once, before any request, and the time it took is
    reported: it is the same for every plan, so it is not part of a request.
    """
    x = np.load(args.inputs)
    if x.dtype != np.uint8:
        return x, {"given": "prepared", "dtype": str(x.dtype), "shape": list(x.shape)}
    if not args.preprocess:
        raise ValueError("uint8 frames need --preprocess (the export manifest's preprocess)")
    if args.preprocess.lstrip().startswith("{"):
        spec = json.loads(args.preprocess)
    else:
        with open(args.preprocess) as f:
            spec = json.load(f)
    t0 = time.perf_counter()
    out = prepare.prepare(x, spec)
    ms = (time.perf_counter() - t0) * 1000.0
    info = {"given": "frames", "dtype": "uint8", "shape": list(x.shape), "prepared_shape": list(out.shape)}
    return out, {**info, "prepare_ms_per_frame": ms / max(1, len(x)), "preprocess": spec}


def run(args: argparse.Namespace, x: np.ndarray) -> dict:
    """One request per image, in order: the head here, the tail on the server (or the full model here on failure)."""
    head = load_model(args.head, args.threads) if args.head else None
    full = load_model(args.full, args.threads) if args.full and args.fallback == "local" else None
    remote = (
        Remote(args.url, args.model, args.timeout, os.environ.get("CPCDRL_TOKEN") or None, args.output)
        if args.url
        else None
    )
    if head is None and remote is None:
        raise ValueError("nothing to run: give --head, --url or both")
    probe = _Probe(args) if args.probe else None
    metadata_check = _check_head_fits(head, remote, args.model) if head is not None and remote is not None else None

    def edge(xi: np.ndarray) -> dict[str, np.ndarray]:
        return {"cut": xi} if head is None else head.run(xi)

    # warm-up, not recorded: ORT's first runs allocate, and the first request opens the TCP connection
    for i in range(min(args.warmup, len(x))):
        feeds = edge(x[i : i + 1])
        if remote is not None:
            try:
                remote.infer(feeds)
            except (OSError, http.client.HTTPException, RuntimeError):
                break
    records: list[dict] = []
    failures, aborted = 0, None
    for i in range(len(x)):
        xi = x[i : i + 1]
        if probe is not None and i % probe.every == 0:
            probe.block(i)
            edge(xi)  # the probe evicted the head's weights from the caches: one unrecorded run brings them back
        t0 = time.perf_counter()
        feeds = edge(xi)
        rec: dict = {"i": i, "edge_ms": (time.perf_counter() - t0) * 1000.0}
        logits = _send(rec, feeds, remote, full, xi)
        if logits is None:  # failed, and no local fallback
            failures += 1
            records.append(rec)
            if failures >= args.max_failures:
                aborted = f"stopped after {failures} consecutive failed requests (last: {rec['error']})"
                break
            continue
        failures = 0 if "error" not in rec else failures + 1
        if (
            metadata_check is not None
            and metadata_check.endswith("not checked against the tail")
            and "error" not in rec
        ):
            metadata_check += f"; checked the first reply instead: {NAMES[logits.dtype]} {list(logits.shape)}"
            if logits.ndim != 2 or logits.shape[0] != 1:
                raise ValueError(
                    f"the server's first reply has shape {list(logits.shape)}, not [1, classes]: wrong model?"
                )
        rec["e2e_ms"] = (time.perf_counter() - t0) * 1000.0
        rec["prediction"] = int(np.argmax(logits[0]))
        records.append(rec)
    if remote is not None:
        remote.close()
    if probe is not None:
        probe.block(len(records))
    return {
        "records": records,
        "requests": len(x),
        "answered": sum(1 for r in records if "prediction" in r),
        "fallbacks": sum(1 for r in records if r.get("fallback")),
        "errors": sum(1 for r in records if "error" in r),
        "aborted": aborted,
        "warmup": args.warmup,
        "host": socket.gethostname(),
        "metadata_check": metadata_check,
        "probe": probe.report() if probe is not None else None,
    }


def _send(
    rec: dict, feeds: dict[str, np.ndarray], remote: Remote | None, full: OrtModel | LiteRTModel | None, xi: np.ndarray
) -> np.ndarray | None:
    """The request's logits: the head's output where nothing is served, the server's reply, or on failure the full
    model here (``rec["fallback"]``); None when the request failed with no fallback. Fills ``rec``'s timings."""
    t1 = time.perf_counter()
    if remote is None:
        rec.update(remote_ms=0.0, bytes_sent=0)
        return next(iter(feeds.values()))
    try:
        logits, server_ms, sent = remote.infer(feeds)
        rec.update(remote_ms=(time.perf_counter() - t1) * 1000.0, bytes_sent=sent, server_compute_ms=server_ms)
        return logits
    except (OSError, http.client.HTTPException, RuntimeError) as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"[:300]
        if full is None:
            return None
        rec.update(fallback=True, remote_ms=0.0, bytes_sent=0)
        return next(iter(full.run(xi).values()))


def _check_head_fits(head: OrtModel | LiteRTModel, remote: Remote, model: str) -> str | None:
    """Refuse a head that does not fit the served tail before sending anything; what was checked, for the report."""
    try:
        meta = model_metadata(remote, model)
    except (OSError, http.client.HTTPException, RuntimeError) as exc:
        # unreachable now: the requests fail (or fall back) one by one
        print(f"warning: no model metadata from the server ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None
    if not (isinstance(meta, dict) and meta.get("inputs")):
        # KServe's Python server lists no inputs by default: nothing to check against before the first reply
        check = "the server's model metadata lists no inputs: the head was not checked against the tail"
        print(f"warning: {check}", file=sys.stderr)
        return check
    want = {t["name"]: (t["datatype"], t["shape"][1:]) for t in meta["inputs"]}
    have = {name: (dtype, shape[1:]) for name, dtype, shape in head.outputs}
    if want != have:
        raise ValueError(f"head outputs {have} do not match the server's inputs {want}")
    return "head outputs match the server's inputs"


def run_bench(args: argparse.Namespace, x: np.ndarray) -> dict:
    """Many plans against each other, drift cancelling: randomised interleaved blocks.

    ``--bench plans.json`` lists {"id", "head" (file or null), "model" (served
    tail or null), "output"}. Each round visits every plan once, in a fresh
    shuffled order, for at least ``--block`` requests and ``--slice-ms`` (batch
    1, images in turn), until every plan has ``--seconds`` of requests and
    ``--min-rounds`` rounds. A
    plan whose head fails to load or whose requests keep failing is reported
    and dropped; the others go on.
    """
    import random

    with open(args.bench) as f:
        plans = json.load(f)
    remote = Remote(args.url, "_", args.timeout, os.environ.get("CPCDRL_TOKEN") or None, "logits") if args.url else None
    heads, failed = _load_heads(plans, remote is not None, args.threads)
    live = [p for p in plans if p["id"] not in failed]

    one = _plan_request(heads, remote)
    for p in list(live):  # warm-up, not recorded: first runs allocate; a plan that cannot answer is dropped here
        try:
            for i in range(args.warmup):
                one(p, x[i % len(x) : i % len(x) + 1])
        except (OSError, http.client.HTTPException, RuntimeError, ValueError) as exc:
            failed[p["id"]] = f"{type(exc).__name__}: {exc}"[:300]
            live.remove(p)
    rng = random.Random(args.seed)
    spent = {p["id"]: 0.0 for p in live}
    fails = {p["id"]: 0 for p in live}
    records: list[dict] = []
    r, k = 0, 0
    round_times = []  # wall clock, so the host can line its own samples up with the rounds
    while live and (r < args.min_rounds or min(spent[p["id"]] for p in live) < args.seconds * 1000.0):
        round_start = time.time()
        order = list(live)
        rng.shuffle(order)
        for p in order:
            k = _visit(p, r, k, x, one, args, records, spent, fails, failed, live)
        round_times.append([round_start, time.time()])
        r += 1
        if r >= args.max_rounds:
            break
    if remote is not None:
        remote.close()
    return {
        "bench": True,
        "records": records,
        "rounds": r,
        "round_times": round_times,
        "failed": failed,
        "plans": [p["id"] for p in plans],
        "host": socket.gethostname(),
        "block": args.block,
        "slice_ms": args.slice_ms,
        "seconds": args.seconds,
        "seed": args.seed,
    }


def _plan_request(heads: dict[str, Any], remote: Remote | None) -> Callable:
    """``one(plan, image)``: one request by a plan of several -> (edge ms, remote ms, logits, bytes sent, server ms)."""

    def one(p: dict, xi: np.ndarray) -> tuple[float, float, np.ndarray, int, float | None]:
        t0 = time.perf_counter()
        head = heads[p["id"]]
        feeds = head.run(xi) if head is not None else {"cut": xi}
        t1 = time.perf_counter()
        if not p.get("model"):
            return (t1 - t0) * 1000.0, 0.0, next(iter(feeds.values())), 0, None
        assert remote is not None  # a plan with a tail and no --url was dropped when the heads loaded
        remote.path, remote.output = f"/v2/models/{p['model']}/infer", p.get("output") or "logits"
        logits, server_ms, sent = remote.infer(feeds)
        return (t1 - t0) * 1000.0, (time.perf_counter() - t1) * 1000.0, logits, sent, server_ms

    return one


def run_adaptive(args: argparse.Namespace, x: np.ndarray) -> dict:
    """The plans of a set, one at a time: each request by the plan of the band the uplink estimate is in (adapt.py).

    ``--adaptive spec.json``: {"plans": [as for --bench], "bands": [{"plan",
    "high"}] slow link first, "hysteresis", "base_ms", "start_bytes_per_s"}.
    After the warm-up the runner waits for ``--start-at`` (epoch seconds: the
    host starts its link trace then too) and sends requests back to back for
    ``--seconds``. Each record has its wall-clock time, plan, band, the link
    sample it gave and the estimate after it; each switch its time and reason.
    While the plan sends nothing, every ``--probe-every-s`` seconds one request
    goes by the next band's plan instead, so the runner sees the link come
    back (0: never).
    """
    with open(args.adaptive) as f:
        spec = json.load(f)
    plans = {p["id"]: p for p in spec["plans"]}
    highs = [b["high"] for b in spec["bands"]]
    remote = Remote(args.url, "_", args.timeout, os.environ.get("CPCDRL_TOKEN") or None, "logits") if args.url else None
    heads, failed = _load_heads(spec["plans"], remote is not None, args.threads)
    if failed:
        raise ValueError(f"plans that cannot run: {failed}")
    one = _plan_request(heads, remote)
    for p in spec["plans"]:  # warm-up, not recorded
        for i in range(args.warmup):
            one(p, x[i % len(x) : i % len(x) + 1])
    est, base_ms = adapt.UplinkEstimate(), float(spec.get("base_ms") or 0.0)
    start = spec.get("start_bytes_per_s")
    band = adapt.band_at(highs, start) if start else 0
    time.sleep(max(0.0, (args.start_at or 0.0) - time.time()))
    started = time.time()
    records: list[dict] = []
    switches: list[dict] = []
    aborted, failures, last_probe, k = None, 0, started, 0
    while time.time() < started + args.seconds:
        p, probe = plans[spec["bands"][band]["plan"]], False
        if not p.get("model") and band + 1 < len(highs) and 0 < args.probe_every_s <= time.time() - last_probe:
            p, probe, last_probe = plans[spec["bands"][band + 1]["plan"]], True, time.time()
        i, k = k % len(x), k + 1
        rec: dict = {"t": time.time(), "i": i, "plan": p["id"], "band": band, "probe": probe}
        try:
            edge_ms, remote_ms, logits, sent, server_ms = one(p, x[i : i + 1])
            rec.update(edge_ms=edge_ms, remote_ms=remote_ms, e2e_ms=edge_ms + remote_ms, bytes_sent=sent)
            rec.update(prediction=int(np.argmax(logits[0])), server_ms=server_ms)
            sample = est.sample(sent, remote_ms, server_ms, base_ms)
            if sample is not None:
                rec.update(sample_bytes_per_s=sample, change=est.add(sample))
            failures = 0
        except (OSError, http.client.HTTPException, RuntimeError) as exc:
            rec["error"], failures = f"{type(exc).__name__}: {exc}"[:300], failures + 1
        rec["estimate_bytes_per_s"] = est.bytes_per_s
        records.append(rec)
        if failures >= args.max_failures:
            aborted = f"stopped after {failures} consecutive failed requests (last: {rec['error']})"
            break
        band = _follow(highs, band, est.bytes_per_s, spec["hysteresis"], switches)
    if remote is not None:
        remote.close()
    return {
        "adaptive": True,
        "started": started,
        "records": records,
        "switches": switches,
        "aborted": aborted,
        "host": socket.gethostname(),
        "estimate_changes": est.changes,
    }


def _follow(highs: list, band: int, estimate: float | None, hysteresis: float, switches: list[dict]) -> int:
    """The band to send the next request by; a switch is logged with its time and reason."""
    new = band if estimate is None else adapt.switch_band(highs, band, estimate, hysteresis)
    if new != band:
        assert estimate is not None
        edge = highs[min(band, new)]  # the threshold crossed next to the band left
        side = "above" if new > band else "below"
        why = f"estimate {estimate / 1e3:.0f} KB/s {side} {edge / 1e3:.0f} KB/s by over {hysteresis:.0%}"
        switches.append({"t": time.time(), "from": band, "to": new, "reason": why})
    return new


def _load_heads(plans: list[dict], have_url: bool, threads: int) -> tuple[dict[str, Any], dict[str, str]]:
    """Every plan's head (None: all on the cloud), and why each plan that cannot run was dropped."""
    heads: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for p in plans:
        if p.get("model") and not have_url:
            failed[p["id"]] = "no --url for a plan with a tail"
            continue
        try:
            heads[p["id"]] = load_model(p["head"], threads) if p.get("head") else None
        except Exception as exc:  # noqa: BLE001 - any load failure of one head drops that plan, not the bench
            failed[p["id"]] = f"{type(exc).__name__}: {exc}"[:300]
    return heads, failed


def _visit(
    p: dict,
    r: int,
    k: int,
    x: np.ndarray,
    one: Callable,
    args: argparse.Namespace,
    records: list[dict],
    spent: dict[str, float],
    fails: dict[str, int],
    failed: dict[str, str],
    live: list[dict],
) -> int:
    """One plan's visit in round ``r``: at least --block requests and at least --slice-ms, so a fast plan gets as much
    time per round as a slow one; a plan that keeps failing is dropped from ``live``. Returns the next image counter."""
    n, visit_start = 0, time.perf_counter()
    while n < args.block or (time.perf_counter() - visit_start) * 1000.0 < args.slice_ms:
        n += 1
        i = k % len(x)
        k += 1
        rec: dict = {"plan": p["id"], "round": r, "i": i}
        try:
            edge_ms, remote_ms, logits, sent, server_ms = one(p, x[i : i + 1])
            rec.update(
                edge_ms=edge_ms,
                remote_ms=remote_ms,
                e2e_ms=edge_ms + remote_ms,
                bytes_sent=sent,
                prediction=int(np.argmax(logits[0])),
            )
            if server_ms is not None:  # the tail's own compute, as the server timed it (Triton does not say)
                rec["server_ms"] = server_ms
            spent[p["id"]] += edge_ms + remote_ms
            fails[p["id"]] = 0
        except (OSError, http.client.HTTPException, RuntimeError) as exc:
            rec["error"] = f"{type(exc).__name__}: {exc}"[:300]
            fails[p["id"]] += 1
        records.append(rec)
        if fails[p["id"]] >= args.max_failures:
            failed[p["id"]] = f"stopped after {fails[p['id']]} consecutive failed requests (last: {rec['error']})"
            live.remove(p)
            break
    return k


class _Probe:
    """Blocks of timed runs of the reference model, each as one round of the profiler times a model."""

    def __init__(self, args: argparse.Namespace) -> None:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import timer  # beside this file on the device; only needed with --probe

        self.time_session = timer.time_session
        self.sess = timer.load_session(args.probe, args.threads)
        self.file = os.path.basename(args.probe)
        self.shape = [int(v) for v in args.probe_shape.split(",")]
        self.every = max(1, args.probe_every)
        self.repeats, self.min_time_s = args.probe_repeats, args.probe_min_ms / 1000.0
        self.blocks: list[dict] = []
        self.time_session(self.sess, self.shape, 5, 1, 0.0)  # warm-up, as the profiler's first round has

    def block(self, before_request: int) -> None:
        r = self.time_session(self.sess, self.shape, 1, self.repeats, self.min_time_s)
        self.blocks.append({"before_request": before_request, **r})

    def report(self) -> dict:
        return {"file": self.file, "input_shape": self.shape, "blocks": self.blocks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="cpcdrl edge runner (numpy + onnxruntime or ai-edge-litert only)")
    ap.add_argument(
        "--inputs", required=True, help=".npy: N x C x H x W float32 (prepared) or N x H x W x 3 uint8 frames"
    )
    ap.add_argument(
        "--preprocess", help="uint8 frames: how to prepare them (size, resize, mean, std): JSON or a .json file"
    )
    ap.add_argument(
        "--bench", help="plans.json: run many plans in randomised interleaved blocks (run_bench) instead of one"
    )
    ap.add_argument("--adaptive", help="set.json: follow the uplink through a plan set's bands (run_adaptive)")
    ap.add_argument("--start-at", type=float, default=None, help="--adaptive: epoch seconds to start the requests at")
    ap.add_argument("--probe-every-s", type=float, default=1.0, help="--adaptive: probe while nothing is sent (0: off)")
    ap.add_argument("--seconds", type=float, default=10.0, help="--bench: requests' time per plan, at least")
    ap.add_argument("--block", type=int, default=3, help="--bench: requests per plan per visit")
    ap.add_argument("--slice-ms", type=float, default=100.0, help="--bench: time per plan per visit, at least")
    ap.add_argument("--min-rounds", type=int, default=5, help="--bench: rounds at least")
    ap.add_argument("--max-rounds", type=int, default=100000, help="--bench: rounds at most")
    ap.add_argument("--seed", type=int, default=0, help="--bench: the visiting order's seed")
    ap.add_argument("--head", help="head.onnx or head.tflite (absent for cut 0: the input itself is sent)")
    ap.add_argument("--url", help="http://HOST:PORT of the KServe v2 server (absent for cut N)")
    ap.add_argument("--model", default="tail")
    ap.add_argument("--output", default="logits", help="the tail's output tensor")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds, for every network call")
    ap.add_argument("--fallback", choices=["none", "local"], default="none")
    ap.add_argument("--full", help="full.onnx for --fallback local")
    ap.add_argument("--max-failures", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--probe", help="reference model (.onnx or .onnx.gz) to time between requests; needs timer.py beside this file"
    )
    ap.add_argument("--probe-shape", default="1,3,32,32", help="its input shape, comma-separated")
    ap.add_argument("--probe-every", type=int, default=50, help="requests between probe blocks")
    ap.add_argument("--probe-repeats", type=int, default=10, help="at least this many runs per block")
    ap.add_argument("--probe-min-ms", type=float, default=100.0, help="and at least this long per block")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        x, inputs = load_inputs(args)
        report = run_bench(args, x) if args.bench else run_adaptive(args, x) if args.adaptive else run(args, x)
        report["inputs"] = inputs
    except Exception as exc:  # on the device: a one-line reason beats a traceback over SSH
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f)
    os.replace(tmp, args.out)
    if args.adaptive:
        ok = sum(1 for r in report["records"] if "prediction" in r)
        print(f"{ok} of {len(report['records'])} requests answered; {len(report['switches'])} switches")
        return 1 if report["aborted"] else 0
    if args.bench:
        ok = sum(1 for r in report["records"] if "prediction" in r)
        print(
            f"{ok} requests answered over {report['rounds']} rounds; {len(report['failed'])} of {len(report['plans'])}"
            " plans failed"
        )
        return 1 if len(report["failed"]) == len(report["plans"]) else 0
    tail = f"; {report['aborted']}" if report["aborted"] else ""
    print(
        f"{report['answered']}/{report['requests']} answered, {report['fallbacks']} locally, {report['errors']}"
        f" errors{tail}"
    )
    return 1 if report["aborted"] else 0


if __name__ == "__main__":
    sys.exit(main())
