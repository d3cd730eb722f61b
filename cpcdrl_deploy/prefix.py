"""Activations after a pruned network's first units, shared by the plans that agree on those units.

A pruned network's first ``b`` units are fixed by the kept channel counts of
the layers in them: the importance ranking, the batch norms and the
least-squares refit (each consumer is fitted on the calibration images as
they come out of the units before it) all follow from those counts. A search
scores hundreds of plans, and many agree on their first units (64-channel
layers in blocks of 8 have eight widths; DDPG's actions settle). For such a
shared prefix the evaluator keeps

- the calibration images' activations after it, with the refitted weights in
  it: the refit of a new plan starts after the prefix (``pruning.prune``);
- each validation chunk's activations after it, batch by batch: scoring
  starts after the prefix (``env.PlanEvaluator``).

Every batch goes through the same operations as in a full pass, so a plan
scores exactly what it scores without the cache (``tests/test_prefix.py``).
The entries are held in memory, least recently used first out, within a
byte budget; a lossy wire (the cut tensor quantised) is not cached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

import torch

from cpcdrl_deploy.analysis import ModelAnalysis

DEFAULT_BUDGET_BYTES = 2 << 30  # VGG16 on CIFAR: one validation chunk through every unit is ~0.4 GB unpruned


def prefix_keys(analysis: ModelAnalysis, n_units: int, out_keep: Sequence[float]) -> list[Hashable]:
    """Key of the first ``b`` units for b = 0..n_units: the kept fraction of every layer in them."""
    keys: list[Hashable] = []
    for b in range(n_units + 1):
        keys.append((b, tuple(float(f) for layer, f in zip(analysis.layers, out_keep) if layer.unit < b)))
    return keys


def nbytes(value: object) -> int:
    """Bytes of the tensors in ``value`` (nested lists, tuples and dicts); oneDNN tensors by their dense size."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0


class PrefixCache:
    """A least-recently-used map from (kind, prefix key, ...) to tensors, within ``budget_bytes``."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> object | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: Hashable, value: object, size: int | None = None) -> None:
        """Keep ``value`` (callers never modify it afterwards); the oldest entries leave to stay within the budget.

        ``size``: its bytes, where some of its tensors are shared with other entries and already counted there.
        """
        size = nbytes(value) if size is None else size
        if size > self.budget_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[key] = (value, size)
        self.bytes += size
        while self.bytes > self.budget_bytes:
            _, (_, freed) = self._entries.popitem(last=False)
            self.bytes -= freed

    def __len__(self) -> int:
        return len(self._entries)
