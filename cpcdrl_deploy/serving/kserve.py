"""The KServe v2 / Open Inference Protocol codec: pure functions from request bytes to tensors and back.

No sockets and no model runtime here, so every serving engine (the embedded
server today) validates and answers requests the same way: body size, JSON,
input names, datatypes, shapes and byte counts are checked, and a bad request
is a ``RequestError`` with its HTTP status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from cpcdrl_deploy.ondevice.datatypes import NUMPY

MAX_BATCH = 256


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ServedModel:
    name: str
    session: object  # onnxruntime.InferenceSession
    inputs: list[dict]
    outputs: list[dict]
    version: str = "1"


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes, what: str) -> object:
    """Standard JSON only: NaN/Infinity, nesting deep enough to exhaust the stack and integers past
    Python's digit limit are 400s, not a dropped connection."""
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise RequestError(400, f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError, and so is the int digit limit
        raise RequestError(400, f"{what} is not JSON ({str(exc)[:120]})") from None


def dumps(obj: object) -> bytes:
    """JSON out: never NaN or Infinity (not JSON); a non-finite value is the request's fault (non-finite inputs)."""
    try:
        return json.dumps(obj, allow_nan=False).encode()
    except ValueError:
        raise RequestError(400, "the result is not finite (NaN or Infinity): check the inputs") from None


def decode_infer(
    model: ServedModel, body: bytes, header_len: int | None
) -> tuple[dict[str, np.ndarray], dict, list[str], bool]:
    """Validate an infer request; returns (feeds, request json, requested outputs, binary replies?)."""
    if header_len is not None:
        if not 0 < header_len <= len(body):
            raise RequestError(
                400, f"Inference-Header-Content-Length {header_len} outside the body ({len(body)} bytes)"
            )
        head, binary = body[:header_len], body[header_len:]
    else:
        head, binary = body, b""
    req = parse_json(head, "request header")
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise RequestError(400, "request needs an 'inputs' list")
    expected = {t["name"]: t for t in model.inputs}
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for t in req["inputs"]:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise RequestError(400, "each input needs a name")
        name = t["name"]
        spec = expected.get(name)
        if spec is None:
            raise RequestError(400, f"unknown input {name!r}; model {model.name} takes {sorted(expected)}")
        if name in feeds:
            raise RequestError(400, f"input {name!r} given twice")
        if t.get("datatype") != spec["datatype"]:
            raise RequestError(400, f"input {name!r}: datatype {t.get('datatype')!r}, expected {spec['datatype']}")
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise RequestError(400, f"input {name!r}: shape must be a list of non-negative integers")
        want = spec["shape"]
        if len(shape) != len(want) or any(w != -1 and w != d for w, d in zip(want, shape)):
            raise RequestError(400, f"input {name!r}: shape {shape}, expected {want}")
        if want and want[0] == -1 and not 1 <= shape[0] <= MAX_BATCH:
            raise RequestError(400, f"input {name!r}: batch {shape[0]} outside 1..{MAX_BATCH}")
        dtype = NUMPY[spec["datatype"]]
        count = int(np.prod(shape)) if shape else 1
        params = t.get("parameters") or {}
        if not isinstance(params, dict):
            raise RequestError(400, f"input {name!r}: parameters must be an object")
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if not isinstance(size, int) or size != count * dtype.itemsize:
                raise RequestError(400, f"input {name!r}: binary_data_size {size} != {count} x {dtype.itemsize} bytes")
            if offset + size > len(binary):
                raise RequestError(400, f"input {name!r}: body ends before its {size} bytes")
            arr = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += size
        elif "data" in t:
            try:
                arr = np.asarray(t["data"], dtype=dtype)
            except (TypeError, ValueError, OverflowError):
                raise RequestError(400, f"input {name!r}: data is not a list of {spec['datatype']} numbers") from None
            if arr.size != count:
                raise RequestError(400, f"input {name!r}: {arr.size} values for shape {shape}")
            arr = arr.reshape(shape)
        else:
            raise RequestError(400, f"input {name!r} has neither data nor binary_data_size")
        feeds[name] = arr
    if offset != len(binary):
        raise RequestError(400, f"{len(binary) - offset} bytes of binary data not claimed by any input")
    missing = sorted(set(expected) - set(feeds))
    if missing:
        raise RequestError(400, f"missing inputs {missing}")
    out_names, binary_out = requested_outputs(model, req)
    return feeds, req, out_names, binary_out


def requested_outputs(model: ServedModel, req: dict) -> tuple[list[str], bool]:
    """(the outputs a request asks for, whether it wants them as binary tensors)."""
    out_names = [o["name"] for o in model.outputs]
    wanted = req.get("outputs")
    rparams = req.get("parameters")
    if rparams is not None and not isinstance(rparams, dict):
        raise RequestError(400, "parameters must be an object")
    binary_default = bool((rparams or {}).get("binary_data_output", False))
    binary_out = binary_default
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(o, dict) and o.get("name") in out_names for o in wanted):
            raise RequestError(400, f"outputs must name some of {out_names}")
        if not all(o.get("parameters") is None or isinstance(o.get("parameters"), dict) for o in wanted):
            raise RequestError(400, "outputs[].parameters must be an object")
        out_names = [o["name"] for o in wanted]
        binary_out = any(bool((o.get("parameters") or {}).get("binary_data", binary_default)) for o in wanted)
    return out_names, binary_out


def encode_infer(
    model: ServedModel, req: dict, names: list[str], results: dict[str, np.ndarray], binary: bool, compute_ms: float
) -> tuple[bytes, int | None]:
    outputs, blobs = [], []
    for n in names:
        arr = np.ascontiguousarray(results[n])
        spec = next(o for o in model.outputs if o["name"] == n)
        o: dict = {"name": n, "datatype": spec["datatype"], "shape": list(arr.shape)}
        if binary:
            b = arr.tobytes()
            o["parameters"] = {"binary_data_size": len(b)}
            blobs.append(b)
        else:
            o["data"] = arr.ravel().tolist()
        outputs.append(o)
    resp = {
        "model_name": model.name,
        "model_version": model.version,
        "outputs": outputs,
        "parameters": {"cpcdrl_compute_ms": compute_ms},
    }
    if "id" in req:
        resp["id"] = req["id"]
    head = dumps(resp)
    return (head + b"".join(blobs), len(head)) if binary else (head, None)
