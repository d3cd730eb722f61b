"""The images a deployed plan is asked about, as the device receives them: camera frames it prepares itself."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cpcdrl_deploy.core.fileio import atomic_write_bytes
from cpcdrl_deploy.models.data import ImageSet


@dataclass
class DeviceInputs:
    """The test images prepared on the host (what PyTorch is asked) and, where they share one size, as stored.

    The device gets the stored frames (uint8, a quarter of the float32 bytes)
    and the preprocessing, and prepares them with ``ondevice/prepare.py``:
    so a deploy checks the device's preprocessing against the host's, not
    only the model halves. Frames of several sizes cannot travel as one
    array; those go prepared, as before.
    """

    prepared: torch.Tensor
    frames: np.ndarray | None
    preprocess: dict

    @classmethod
    def pick(cls, images: ImageSet, idx: np.ndarray) -> DeviceInputs:
        got = images.uint8(idx)  # decoded once: prepared here and, where they share a size, sent as they are
        raw: np.ndarray | None = got if isinstance(got, np.ndarray) else None
        if isinstance(got, list) and got and len({im.shape for im in got}) == 1:
            raw = np.stack(got)
        return cls(images.prep.apply(got), raw, images.prep.to_dict())

    def save(self, path: Path) -> Path:
        """``path`` (.npy): the frames, with the preprocessing beside it (``.json``), or the prepared tensors."""
        spec = path.with_suffix(".json")
        data = self.prepared.numpy().astype(np.float32) if self.frames is None else self.frames.astype(np.uint8)
        buf = io.BytesIO()
        np.save(buf, data)
        atomic_write_bytes(path, buf.getvalue())
        if self.frames is None:
            spec.unlink(missing_ok=True)  # a sidecar from an earlier run would make the device prepare tensors
        else:
            atomic_write_bytes(spec, json.dumps(self.preprocess).encode())
        return path
