"""Atomic file writes: a crash or Ctrl-C never leaves a half-written result."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

from cpcdrl_deploy.core.errors import CpcdrlError


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


def portable_args(args: object, drop: tuple[str, ...] = ()) -> dict:
    """A script's arguments for a committed result: absolute paths made relative to the working directory
    (the repository, where benchmarks run), so results name no machine's folders; ``drop``: arguments that
    say nothing about the result (a cache directory)."""
    d = dict(vars(args)) if not isinstance(args, dict) else dict(args)
    d = {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}  # argparse's type=Path, as JSON text
    return {
        k: os.path.relpath(v) if isinstance(v, str) and os.path.isabs(v) else v for k, v in d.items() if k not in drop
    }


def atomic_write_json(path: str | Path, obj: object) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def existing(path: str | Path) -> Path | None:
    """``path``, or its gzipped sibling ``path.gz`` where only that exists (large committed results are kept
    compressed); None when neither does."""
    p = Path(path)
    if p.is_file():
        return p
    gz = p.with_name(p.name + ".gz")
    return gz if gz.is_file() else None


def read_json(path: str | Path) -> object:
    """JSON from ``path`` or from ``path.gz`` (see ``existing``); OSError, ValueError as json and gzip raise them."""
    p = existing(path)
    if p is None:
        raise FileNotFoundError(f"{path} not found")
    raw = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
    return json.loads(raw)


def check_writable(path: str | Path | None, what: str, directory: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: a missing or read-only parent, a path of the wrong
    kind.

    Checked by creating and removing a probe file, which is what the final
    atomic write will need; nothing is left behind.
    """
    if path is None:
        return
    p = Path(path)
    if directory:
        if p.exists() and not p.is_dir():
            raise CpcdrlError(f"{what} {p} exists and is not a directory")
        target = p if p.is_dir() else p.parent
    else:
        if p.is_dir():
            raise CpcdrlError(f"{what} {p} is a directory; give a file name")
        target = p.parent
    # the nearest existing ancestor must be a writable directory (a file or nothing there means mkdir will fail)
    probe_dir = target
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise CpcdrlError(f"cannot write {what} {p}: {probe_dir} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".cpcdrl-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise CpcdrlError(f"cannot write {what} {p}: {exc.strerror or exc}") from None
