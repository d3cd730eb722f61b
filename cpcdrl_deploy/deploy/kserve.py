"""A KServe ``InferenceService`` for the exported tail: the cloud half on a Kubernetes cluster.

``cpcdrl export PLAN --kserve`` writes the tail as a Triton model repository
(``--triton``, default ``OUT/triton``) and, beside it, ``inferenceservice.yaml``:
protocol v2 (the Open Inference Protocol the edge runner speaks), the ONNX
model format and KServe's Triton runtime, which serves every model of the
repository under its folder name. The storage URI is where the user uploads
that repository (an ``s3://``, ``gs://`` or ``pvc://`` folder); until they
give it (``--storage-uri``), it is a placeholder whose scheme is none of the
storage schemes KServe supports, so an unfilled manifest is not applied quietly. docs/deploying.md shows
the whole path. The manifest is checked against the kserve SDK's published
models in tests/test_kserve.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.fileio import atomic_write_bytes

API_VERSION = "serving.kserve.io/v1beta1"
RUNTIME = "kserve-tritonserver"  # KServe's ClusterServingRuntime for Triton; it serves ONNX over protocol v2
STORAGE_PLACEHOLDER = "FILL-IN://the-folder-you-uploaded-the-triton-repository-to"
FILE_NAME = "inferenceservice.yaml"
# the tail's share of a node: one core, as the server was profiled (threads 1), and room for ONNX Runtime's arena
RESOURCES = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}


def service_name(model_name: str) -> str:
    """A Kubernetes object name (a DNS-1123 label: lowercase letters, digits and '-', at most 63) from a model name."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")[:63].rstrip("-")
    if not name or not name[0].isalpha():
        name = ("tail-" + name)[:63].rstrip("-")
    return name


def inference_service(model_name: str, storage_uri: str | None = None) -> dict:
    """The ``InferenceService`` serving the Triton repository that holds ``model_name`` (the tail)."""
    if storage_uri is not None and "://" not in storage_uri:
        raise CpcdrlError(f"--storage-uri {storage_uri!r}: expected a URI such as s3://bucket/path or pvc://claim/path")
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": service_name(model_name), "annotations": {"cpcdrl/tail-model": model_name}},
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "onnx"},
                    "protocolVersion": "v2",
                    "runtime": RUNTIME,
                    "storageUri": storage_uri or STORAGE_PLACEHOLDER,
                    "resources": RESOURCES,
                }
            }
        },
    }


def to_yaml(doc: dict, indent: int = 0) -> str:
    """Block-style YAML of nested mappings of strings and numbers (all a manifest here holds); strings double-quoted
    as JSON writes them, which YAML reads the same. No YAML library needed for one file."""
    lines = []
    for key, value in doc.items():
        pad = "  " * indent
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            lines.append(to_yaml(value, indent + 1))
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            lines.append(f"{pad}{key}: {json.dumps(value)}")
        else:
            raise TypeError(f"{key}: {type(value).__name__} is not written by to_yaml")
    return "\n".join(lines)


def write_inference_service(out_dir: Path, model_name: str, storage_uri: str | None = None) -> Path:
    """``out_dir/inferenceservice.yaml`` for the tail ``model_name``, written atomically; its path."""
    path = out_dir / FILE_NAME
    doc = inference_service(model_name, storage_uri)
    head = "# cpcdrl export --kserve: the cloud half on KServe (docs/deploying.md)\n"
    if storage_uri is None:
        head += "# fill in spec.predictor.model.storageUri: the folder holding the Triton repository (triton/)\n"
    atomic_write_bytes(path, (head + to_yaml(doc) + "\n").encode())
    return path
