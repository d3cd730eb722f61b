"""Edge runtimes: which file a head becomes, how it is built here, and what the device must have to run it.

Two runtimes, one interface (in the spirit of nn-Meter's backends):

- ``onnxruntime``: the head as ONNX (``export._onnx_bytes``), run by ONNX Runtime;
- ``litert``: the head as a ``.tflite`` flatbuffer converted from the PyTorch
  module by ``litert-torch`` (no TensorFlow), run by LiteRT (``ai-edge-litert``).
  The converter keeps NCHW at the model's boundaries (it adds the transposes
  to LiteRT's NHWC inside), so a LiteRT head feeds the same ONNX tail.

Running a built file goes through ``edge_runner.load_model`` on both sides
(the suffix picks the runtime), so the host's export check and the device run
the same code.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cpcdrl_deploy.errors import CpcdrlError


@dataclass(frozen=True)
class Runtime:
    name: str
    suffix: str  # of the head file
    modules: tuple[str, ...]  # the device imports any one of these
    install: str  # what to install on the device when none imports


RUNTIMES = {
    "onnxruntime": Runtime("onnxruntime", ".onnx", ("onnxruntime",), "onnxruntime"),
    "litert": Runtime("litert", ".tflite", ("ai_edge_litert", "tflite_runtime"), "ai-edge-litert"),
}


def get_runtime(name: str) -> Runtime:
    if name not in RUNTIMES:
        raise CpcdrlError(f"--runtime must be one of {', '.join(RUNTIMES)} (got {name!r})")
    return RUNTIMES[name]


def tflite_bytes(module: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """``module`` (batch 1, float32) as a LiteRT flatbuffer, converted by litert-torch."""
    try:
        import litert_torch
    except ImportError:
        raise CpcdrlError('--runtime litert needs the converter on this host: pip install -e ".[litert]"') from None
    module.eval()
    try:
        converted = litert_torch.convert(module, (torch.zeros(1, *input_shape),))
    except Exception as exc:  # noqa: BLE001 - the converter raises many kinds; one line says which step failed
        raise CpcdrlError(f"litert-torch could not convert the head: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "head.tflite"
        converted.export(str(path))
        return path.read_bytes()
