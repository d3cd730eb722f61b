"""Edge runtimes: which file a head becomes, how it is built here, and what the device must have to run it.

Two runtimes, one interface (in the spirit of nn-Meter's backends):

- ``onnxruntime``: the head as ONNX (``export.onnx_model_bytes``), run by ONNX Runtime;
- ``litert``: the head as a ``.tflite`` flatbuffer converted from the PyTorch
  module by ``litert-torch`` (no TensorFlow), run by LiteRT (``ai-edge-litert``).
  The converter keeps NCHW at the model's boundaries (it adds the transposes
  to LiteRT's NHWC inside), so a LiteRT head feeds the same ONNX tail.

Running a built file goes through ``edge_runner.load_model`` on both sides
(the suffix picks the runtime), so the host's export check and the device run
the same code.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.devices.remote import Device


def onnx_bytes(module: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """``module`` (batch 1, float32) as an ONNX model, input ``x``, output ``y``: what the profiler times."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
        f: Any = buf  # torch annotates a path, and takes a file object too
        torch.onnx.export(
            module,
            (torch.zeros(1, *input_shape),),
            f,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            opset_version=17,
        )
    return buf.getvalue()


@dataclass(frozen=True)
class Runtime:
    """An edge runtime as a backend: its head file, how this host builds one, what the device and the pipeline need.

    Everything that differs between runtimes is a field here, so the stages ask the backend
    (``rt.transfers``, ``rt.build``) instead of branching on its name."""

    name: str
    suffix: str  # of the head file
    modules: tuple[str, ...]  # the device imports any one of these
    install: str  # what to install on the device when none imports
    build: Callable[[nn.Module, tuple[int, ...]], bytes]  # a unit or head (batch 1, float32) as this runtime's file
    transfers: tuple[str, ...]  # the cut tensor's encodings a head of this runtime sends (compress/transfer.py)
    onnx_head: (
        bool  # the exported head is the ONNX model itself; otherwise converted from the module and checked against it
    )
    speed_probe: bool  # deploy's speed probe (the profile's ONNX whole model) runs on the device beside this head
    local_fallback: bool  # deploy --fallback (the full model in ONNX Runtime on the device) works beside this head
    quantize: Callable[[bytes, Any], bytes]  # this runtime's head file and calibration images -> its int8 head
    quantizer: str  # how, in words (export's log line)


def onnx_int8(head: bytes, calib_x: Any) -> bytes:
    """Static int8 (QDQ) quantisation with ONNX Runtime, activations calibrated on ``calib_x`` (N, C, H, W float32)."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": calib_x[i : i + 32]} for i in range(0, len(calib_x), 32)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "head_fp32.onnx", Path(d) / "head_int8.onnx"
        src.write_bytes(head)
        logging.disable(logging.WARNING)  # ORT's "consider pre-processing" notice on every call
        try:
            quantize_static(
                str(src),
                str(dst),
                Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
            return dst.read_bytes()
        finally:
            logging.disable(logging.NOTSET)


def tflite_bytes(module: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """``module`` (batch 1, float32) as a LiteRT flatbuffer, converted by litert-torch."""
    module.eval()
    with tempfile.TemporaryDirectory() as d, _quiet(Path(d) / "converter.log"):
        try:
            import litert_torch  # inside: its import alone logs a dozen lines
        except ImportError:
            raise CpcdrlError('--runtime litert needs the converter on this host: pip install -e ".[litert]"') from None
        # it imports JAX, whose threads make every later subprocess start warn about fork(); subprocess
        # execs at once in the child, which is safe
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        try:
            converted = litert_torch.convert(module, (torch.zeros(1, *input_shape),))
            path = Path(d) / "head.tflite"
            converted.export(str(path))
        except Exception as exc:  # noqa: BLE001 - the converter raises many kinds; one line says which step failed
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise CpcdrlError(f"litert-torch could not convert the model: {type(exc).__name__}: {first}") from None
        return path.read_bytes()


def tflite_int8(fp32: bytes, calib) -> bytes:
    """A LiteRT fp32 flatbuffer quantised to int8 weights and activations (ai-edge-quantizer's
    ``static_wi8_ai8`` recipe), activations calibrated on ``calib`` (N, C, H, W float32) one image at a time.

    The result takes and returns int8 with one scale and zero point each;
    ``edge_runner.LiteRTModel`` quantises the float image and dequantises the
    cut tensor at its boundaries, so the wire and the ONNX tail stay fp32.
    """
    with tempfile.TemporaryDirectory() as d, _quiet(Path(d) / "quantizer.log"), warnings.catch_warnings():
        # calibration keeps every tensor on purpose; LiteRT warns about it once per model
        warnings.filterwarnings("ignore", message=r".*experimental_preserve_all_tensors", category=UserWarning)
        try:
            from ai_edge_litert.interpreter import Interpreter
            from ai_edge_quantizer import quantizer, recipe
        except ImportError:
            raise CpcdrlError(
                '--runtime litert --quantize int8 needs ai-edge-quantizer on this host: pip install -e ".[litert]"'
            ) from None
        try:
            sig = Interpreter(model_content=fp32).get_signature_list()
            name = next(iter(sig))
            inp = sig[name]["inputs"][0]
            qt = quantizer.Quantizer(fp32)
            qt.load_quantization_recipe(recipe.static_wi8_ai8())
            stats = qt.calibrate({name: [{inp: calib[i : i + 1]} for i in range(len(calib))]})
            return bytes(qt.quantize(stats).quantized_model)
        except Exception as exc:  # noqa: BLE001 - one line naming the step, not the quantizer's traceback
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise CpcdrlError(f"ai-edge-quantizer could not quantise the head: {type(exc).__name__}: {first}") from None


@contextlib.contextmanager
def _quiet(log: Path):
    """File descriptors 1 and 2 into ``log`` for the block: the converter prints its progress
    and its C++ logs (MLIR passes, XNNPACK notices) there, dozens of lines per model."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with (
        open(log, "wb") as f,
        open(log, "a") as text,
        contextlib.redirect_stdout(text),
        contextlib.redirect_stderr(text),
    ):
        # the descriptors for C++ and subprocess output, sys.stdout/err for Python's prints
        # (they need not be fds 1 and 2: a test runner or a notebook replaces them)
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


RUNTIMES = {
    "onnxruntime": Runtime(
        "onnxruntime",
        ".onnx",
        ("onnxruntime",),
        "onnxruntime",
        onnx_bytes,
        ("fp32", "fp16", "int8"),
        onnx_head=True,
        speed_probe=True,
        local_fallback=True,
        quantize=onnx_int8,
        quantizer="ONNX Runtime static QDQ",
    ),
    "litert": Runtime(
        "litert",
        ".tflite",
        ("ai_edge_litert", "tflite_runtime"),
        "ai-edge-litert",
        tflite_bytes,
        ("fp32",),
        onnx_head=False,
        speed_probe=False,
        local_fallback=False,
        quantize=tflite_int8,
        quantizer="LiteRT static int8",
    ),
}


def get_runtime(name: str) -> Runtime:
    if name not in RUNTIMES:
        raise CpcdrlError(f"--runtime must be one of {', '.join(RUNTIMES)} (got {name!r})")
    return RUNTIMES[name]


def check_runtime(dev: Device, runtime: str = "onnxruntime") -> dict[str, str]:
    """The device's Python must import numpy and the runtime's package (runtimes.py); say exactly what is missing."""
    rt = get_runtime(runtime)
    probe = (
        "import sys, importlib\ndef v(names):\n  for n in names:\n    try: return getattr(importlib.import_module(n),"
        " '__version__', 'present')\n    except Exception: pass\n  return None\nprint(sys.version.split()[0],"
        f" v(['numpy']), v({list(rt.modules)!r}))"
    )
    rc, out, err = dev.run(f"{shlex.quote(dev.python)} -c {shlex.quote(probe)}", timeout=60)
    if rc != 0:
        why = (err or out).strip().splitlines()[-1] if (err or out).strip() else rc
        raise CpcdrlError(f"{dev.name}: cannot run {dev.python} ({why}); install Python 3 or pass --python")
    py, np_v, rt_v = out.split()[-3:]
    missing = [pkg for pkg, v in (("numpy", np_v), (rt.install, rt_v)) if v == "None"]
    if missing:
        raise CpcdrlError(
            f"{dev.name}: {dev.python} lacks {' and '.join(missing)}; on the device run: {dev.python} -m pip install"
            f" {' '.join(missing)}"
        )
    return {"python": py, "numpy": np_v, rt.name: rt_v}
