"""A persistent cache of plan accuracies, shared by every link, device and method.

A plan's accuracy does not depend on the latency model, so one evaluation
serves every ``optimize`` run on the same pruned model and images. The key
has two parts:

- the *context*: everything that changes a pruned model or the images it is
  scored on -- the checkpoint's SHA-256, the validation images and labels
  and the calibration images (hashed by content, so a changed data set or
  seed misses), the pruning configuration, the seed, the chunk size, and
  ``ALGO_VERSION`` (bumped whenever pruning or the refit changes);
- the *plan*: the cut and the kept channel fraction of every edge layer.

An entry holds the number of correct predictions per chunk of validation
images, and how many of them the unpruned model got the other way (right
where the plan is wrong or the reverse: the paired standard error of the
plan's accuracy drop, search.py's selection margin, comes from it), as far as scoring went (early stopping and
screening score only the
first chunks). The evaluator replays those counts chunk by chunk with the
same stopping rules, so a cached answer is exactly what a fresh evaluation
would give; when it needs more chunks than are stored, it scores the plan
again and stores the longer record. Entries are single JSON files written
atomically (temporary file + rename): two runs may share a cache, the last
writer of an entry wins, and both wrote the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.fileio import atomic_write_bytes

# bump when pruning, the refit or the accuracy measurement changes what a plan scores
# (2: the refit solved in its dual form where that is smaller; float rounding differs;
# 3: scored with batch norm folded into the convolutions, fastcpu.py: rounding differs again)
ALGO_VERSION = 3
SCHEMA_VERSION = 2  # 2: chunk_changed; a version-1 entry is read without it (a validation replay then scores again)


def default_cache_dir() -> Path:
    """``accuracy/`` under ``$CPCDRL_CACHE``, else ``$XDG_CACHE_HOME/cpcdrl``, else ``~/.cache/cpcdrl``."""
    if os.environ.get("CPCDRL_CACHE"):
        return Path(os.environ["CPCDRL_CACHE"]) / "accuracy"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cpcdrl" / "accuracy"


def tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of tensors' shapes, dtypes and bytes (content identity, not object identity)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def context_key(**parts: object) -> str:
    """A stable hash of the named parts (JSON with sorted keys), plus ALGO_VERSION."""
    doc = json.dumps({"algo_version": ALGO_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CachedScore:
    chunk_correct: tuple[int, ...]  # correct predictions in each chunk scored, in order
    chunk_sizes: tuple[int, ...]
    chunk_changed: tuple[
        int, ...
    ] = ()  # per chunk: images whose correctness differs from the unpruned model's (empty: not recorded)

    def to_dict(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, **{k: list(v) for k, v in asdict(self).items()}}


class AccuracyCache:
    """Entries under ``root/<context>/<plan hash>.json``; ``root`` None disables it."""

    def __init__(self, root: Path | None, context: str) -> None:
        self.root = Path(root) if root is not None else None
        self.context = context
        self.hits = 0
        self.writes = 0
        if self.root is not None:
            try:
                (self.root / context).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CpcdrlError(f"cannot use cache directory {self.root}: {exc.strerror or exc}") from None

    @staticmethod
    def plan_key(cut: int, out_keep: tuple[float, ...]) -> str:
        doc = json.dumps([cut, [round(float(f), 9) for f in out_keep]])
        return hashlib.sha256(doc.encode()).hexdigest()[:32]

    def _path(self, cut: int, out_keep: tuple[float, ...]) -> Path:
        assert self.root is not None
        return self.root / self.context / f"{self.plan_key(cut, out_keep)}.json"

    def get(self, cut: int, out_keep: tuple[float, ...]) -> CachedScore | None:
        if self.root is None:
            return None
        p = self._path(cut, out_keep)
        try:
            d = json.loads(p.read_text())
            score = CachedScore(
                tuple(int(x) for x in d["chunk_correct"]),
                tuple(int(x) for x in d["chunk_sizes"]),
                tuple(int(x) for x in d.get("chunk_changed", ())),
            )
            if d.get("schema_version") not in (1, SCHEMA_VERSION) or len(score.chunk_correct) != len(score.chunk_sizes):
                return None
            if score.chunk_changed and len(score.chunk_changed) != len(score.chunk_sizes):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent, or damaged by something else: score again (and overwrite)
        self.hits += 1
        return score

    def put(self, cut: int, out_keep: tuple[float, ...], score: CachedScore) -> None:
        if self.root is None:
            return
        old = self.get(cut, out_keep)
        if old is not None:
            self.hits -= 1  # a look before writing is not a hit
            if _covers(old, score):
                return
        atomic_write_bytes(self._path(cut, out_keep), json.dumps(score.to_dict()).encode())
        self.writes += 1


def _covers(old: CachedScore, new: CachedScore) -> bool:
    """Whether a stored record already says all ``new`` says: never replace a longer record with a shorter
    one, nor one with the changed counts with one without (two runs may write the same plan)."""
    if len(old.chunk_sizes) != len(new.chunk_sizes):
        return len(old.chunk_sizes) > len(new.chunk_sizes)
    return bool(old.chunk_changed) or not new.chunk_changed


def cache_info(root: Path) -> dict[str, Any]:
    """Contexts, entries and bytes under ``root``."""
    contexts, entries, size = 0, 0, 0
    if root.is_dir():
        for ctx in root.iterdir():
            if not ctx.is_dir():
                continue
            contexts += 1
            for f in ctx.glob("*.json"):
                entries += 1
                size += f.stat().st_size
    return {"path": str(root), "contexts": contexts, "entries": entries, "bytes": size}


def clear_cache(root: Path) -> int:
    """Remove every entry (only what this cache writes: context folders of JSON files); returns the count."""
    n = 0
    if not root.is_dir():
        return 0
    for ctx in root.iterdir():
        if ctx.is_dir() and len(ctx.name) == 32 and all(c in "0123456789abcdef" for c in ctx.name):
            n += sum(1 for _ in ctx.glob("*.json"))
            shutil.rmtree(ctx)
    return n
