"""An export directory as the serving side reads it: the manifest, ONNX tensor specs, ONNX Runtime sessions.

`cpcdrl export` writes the manifest (``deploy/export.py``); the server, the
request probe, ``deploy`` and ``bench`` read it through ``load_manifest``,
which checks every file's SHA-256 and that the head's outputs are the tail's
inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from cpcdrl_deploy.core.artifact import Artifact, Part
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.models.zoo import file_sha256
from cpcdrl_deploy.ondevice.datatypes import FROM_ONNX

MANIFEST_SCHEMA_VERSION = 1


class TensorSpec(Part):
    """KServe v2 tensor metadata: -1 marks a dynamic dimension."""

    name: str
    datatype: str
    shape: list[int]


class ModelFile(Part):
    """One model file of an export, as the server and the runner find it."""

    file: str
    sha256: str
    model_name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    bytes: int | None = None
    runtime: str = "onnxruntime"
    layout: str | None = None
    precision: str = "fp32"
    io: str | None = None  # how an int8 head's inputs and outputs are converted, where they are


class RoleRuntimes(Part):
    head: str | None = None
    tail: str | None = None


class ExportManifest(Artifact):
    """What ``cpcdrl export`` wrote: each file and its hash, how the split was checked, the plan it came from."""

    KIND = "cpcdrl-export"
    VERSION = MANIFEST_SCHEMA_VERSION
    REMAKE = "cpcdrl export PLAN --out DIR"

    cpcdrl_version: str | None = None
    purpose: str | None = None  # set where the export is not a plan's (the request probe's tails)
    model: str | None = None
    cut: int | None = None
    n_layers: int | None = None
    cut_shape: list[int] | None = None
    transfer: str = "fp32"
    quantize: str | None = None
    preprocess: dict[str, Any] = {}  # layout, size, resize, mean, std: how the device prepares an image
    files: dict[str, ModelFile]  # by role: head, tail, full
    check: dict[str, bool | int | float] = {}  # agreement with PyTorch, accuracy, ... on the check images
    runtime: RoleRuntimes = RoleRuntimes()
    plan: dict[str, Any] | None = None  # the plan document, as export read it (search/plan.py types it)
    export_s: float | None = None

    def spec(self, role: str) -> ModelFile | None:
        return self.files.get(role)


def io_specs(model: onnx.ModelProto) -> dict[str, Any]:
    """Inputs and outputs as KServe v2 tensor metadata (datatype names, -1 for dynamic dims)."""

    def spec(v) -> dict:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return {"name": v.name, "datatype": FROM_ONNX.get(t.elem_type, str(t.elem_type)), "shape": dims}

    inits = {i.name for i in model.graph.initializer}
    return {
        "inputs": [spec(v) for v in model.graph.input if v.name not in inits],
        "outputs": [spec(v) for v in model.graph.output],
    }


def ort_session(model: bytes | str | Path, threads: int = 1):
    """An ONNX Runtime CPU session; a corrupt or foreign file is one error line."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            model if isinstance(model, bytes) else str(model), so, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/...: all mean "not a model we can run"
        raise CpcdrlError(
            f"ONNX Runtime cannot load {'the model' if isinstance(model, bytes) else model}: {str(exc).splitlines()[0]}"
        ) from None


def run_split(head, tail, x: np.ndarray) -> np.ndarray:
    """tail(head(x)) with ONNX Runtime sessions; either may be None (cut N / cut 0)."""
    feeds = {"cut": x}  # cut 0: the input itself is the cut tensor
    if head is not None:
        outs = head.run(None, {"input": x})
        feeds = {o.name: v for o, v in zip(head.get_outputs(), outs)}
    if tail is None:
        return next(iter(feeds.values()))
    return tail.run(None, feeds)[0]


def load_manifest(export_dir: str | Path) -> ExportManifest:
    """The manifest of an export directory, with every file's SHA-256 checked."""
    d = Path(export_dir)
    if not (d / "manifest.json").is_file():
        raise CpcdrlError(f"{d} has no manifest.json (run cpcdrl export first)")
    m: ExportManifest = ExportManifest.load(d / "manifest.json", "export manifest")
    for role, f in m.files.items():
        fp = d / f.file
        if not fp.is_file():
            raise CpcdrlError(f"{role} model {fp} is missing")
        if file_sha256(fp) != f.sha256:
            raise CpcdrlError(f"{fp} does not match the manifest's SHA-256 (modified or corrupt)")
    check_pair(m.spec("head"), m.spec("tail"))
    return m


def check_pair(head: ModelFile | None, tail: ModelFile | None) -> None:
    """A head's outputs must be exactly its tail's inputs (names, datatypes, per-sample shapes)."""
    if head is None or tail is None:
        return
    outs = {t.name: (t.datatype, t.shape[1:]) for t in head.outputs}
    ins = {t.name: (t.datatype, t.shape[1:]) for t in tail.inputs}
    if outs != ins:
        raise CpcdrlError(f"head and tail do not match: head gives {outs}, tail takes {ins}")
