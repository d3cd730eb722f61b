"""Runs IN THE TRITON PYTHON: the exported tails served by NVIDIA Triton through PyTriton, ONNX Runtime inside.

``cpcdrl serve DIR --engine triton`` starts this file with the Python named
by ``--triton-python`` (a venv of an interpreter whose shared ``libpython``
is its own, with ``pip install nvidia-pytriton onnxruntime numpy``; see
``triton_python_problem``), passing a JSON spec of the tails on stdin:

    {"models": [{"name", "path", "inputs": [{"name", "datatype", "shape"}], "outputs": [...]}],
     "host", "http_port", "grpc_port", "metrics_port", "max_batch", "queue_delay_us", "threads"}

It needs numpy, onnxruntime and nvidia-pytriton, no torch and no cpcdrl.
Triton's dynamic batcher gathers concurrent requests of a model into one
ONNX Runtime run of up to ``max_batch`` rows, waiting at most
``queue_delay_us`` for more. A tail that takes a per-request tensor without
a batch dimension (the int8 wire's scale, shape [1]) cannot be batched that
way: it is served one request per run (``max_batch_size`` 0), and the
first line says so. Prints one ``serving ...`` line once every model is
ready; on SIGTERM, one JSON line with the batch sizes each model ran.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections import Counter

DTYPES = {"FP32": "float32", "FP16": "float16", "UINT8": "uint8", "INT8": "int8", "INT32": "int32", "INT64": "int64"}


def batchable(spec: dict) -> bool:
    """Whether every input and output of a tail has a leading dynamic batch dimension."""
    return all(t["shape"] and t["shape"][0] == -1 for t in spec["inputs"] + spec["outputs"])


def make_infer(sess, spec: dict, sizes: Counter, batched: bool):
    """The bound function: ONNX Runtime on Triton's (batched) tensors; each run's batch size counted."""
    import numpy as np
    from pytriton.decorators import batch

    in_names = [t["name"] for t in spec["inputs"]]
    out_names = [t["name"] for t in spec["outputs"]]
    lock = threading.Lock()

    def run(inputs: dict) -> dict:
        feeds = {n: np.ascontiguousarray(inputs[n]) for n in in_names}
        outs = sess.run(out_names, feeds)
        with lock:
            sizes[int(next(iter(feeds.values())).shape[0]) if batched else 1] += 1
        return dict(zip(out_names, outs, strict=True))

    if batched:

        @batch
        def infer_batched(**inputs):
            return run(inputs)

        return infer_batched

    def infer_each(requests):
        return [run(dict(r)) for r in requests]

    return infer_each


def tensors(specs: list[dict], batched: bool) -> list:
    import numpy as np
    from pytriton.model_config import Tensor

    def shape(t: dict) -> tuple:
        return tuple(t["shape"][1:] if batched else t["shape"])  # batched: Triton adds the batch dimension

    return [Tensor(name=t["name"], dtype=np.dtype(DTYPES[t["datatype"]]), shape=shape(t)) for t in specs]


def main() -> int:
    import onnxruntime as ort
    from pytriton.model_config import DynamicBatcher, ModelConfig
    from pytriton.triton import Triton, TritonConfig

    spec = json.load(sys.stdin)
    host = spec["host"]
    config = TritonConfig(
        http_address=host,
        http_port=spec["http_port"],
        grpc_address=host,
        grpc_port=spec["grpc_port"],
        metrics_address=host,
        metrics_port=spec["metrics_port"],
        allow_gpu_metrics=False,
        log_verbose=0,
    )
    sizes: dict[str, Counter] = {}
    notes = []
    triton = Triton(config=config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for m in spec["models"]:
            so = ort.SessionOptions()
            so.intra_op_num_threads = spec["threads"]
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(m["path"], so, providers=["CPUExecutionProvider"])
            batched = batchable(m) and spec["max_batch"] > 1
            if not batched:
                notes.append(f"{m['name']}: one request per run (an input without a batch dimension)")
            sizes[m["name"]] = Counter()
            cfg = (
                ModelConfig(
                    max_batch_size=spec["max_batch"],
                    batcher=DynamicBatcher(max_queue_delay_microseconds=spec["queue_delay_us"]),
                )
                if batched
                else ModelConfig(batching=False)
            )
            triton.bind(
                model_name=m["name"],
                infer_func=make_infer(sess, m, sizes[m["name"]], batched),
                inputs=tensors(m["inputs"], batched),
                outputs=tensors(m["outputs"], batched),
                config=cfg,
                strict=True,
            )
        triton.run()  # in the background; returns once the models are loaded
        names = ", ".join(m["name"] for m in spec["models"])
        print(
            f"serving {names} on http://{host}:{spec['http_port']} (Triton, KServe v2; gRPC {host}:{spec['grpc_port']},"
            f" metrics http://{host}:{spec['metrics_port']}/metrics)" + "".join(f"; {n}" for n in notes),
            flush=True,
        )
        stop.wait()
    finally:
        triton.stop()
        print(json.dumps({"batch_sizes": {k: dict(sorted(v.items())) for k, v in sizes.items()}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
