"""Atomic file writes: a crash or Ctrl-C never leaves a half-written result."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from cpcdrl_deploy.errors import CpcdrlError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, obj: object) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_document(path: str | Path, kind: str, version: int, what: str) -> dict:
    """A versioned JSON document (``{"kind": kind, "schema_version": version, ...}``), or one error line."""
    p = Path(path)
    if not p.is_file():
        raise CpcdrlError(f"{what} not found: {p}")
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CpcdrlError(f"cannot read {what} {p}: {exc}") from None
    if not isinstance(d, dict) or d.get("kind") != kind or d.get("schema_version") != version:
        raise CpcdrlError(f"{p} is not a {kind} file (schema_version {version})")
    return d
