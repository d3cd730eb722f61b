"""The search environment: prices and scores (cut, keep ratios) plans, and builds agent states.

Accuracy is measured on a validation split carved from the training images;
identical plans (same cut, same channel counts) are evaluated once. Images
are scored in chunks, and two kinds of plan stop early, their estimate still
feeding the reward:
- clearly infeasible ones: once the accuracy's upper confidence bound
  (+3 standard errors) falls below A0;
- ones that cannot replace the searching method's best feasible plan because
  they are no faster (``incumbent_ms``): their accuracy decides nothing but
  their reward, and one chunk estimates it. Racing, as in Hoeffding races:
  only a plan that could become the answer is scored on every image. Such a
  "screened" estimate is cached as such; a method that later needs the plan
  in full scores it again.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import torch

from cpcdrl_deploy.compress.pruning import Calibration, ChannelGroup, PlanShape, PruneConfig, plan_shape, prune
from cpcdrl_deploy.compress.transfer import WireModel, lossy_at
from cpcdrl_deploy.measure.latency import LatencyBreakdown, LatencyModel
from cpcdrl_deploy.models.evaluate import predict
from cpcdrl_deploy.models.graph import ModelAnalysis
from cpcdrl_deploy.models.scoring import scoring_copy
from cpcdrl_deploy.models.zoo import UnitModel
from cpcdrl_deploy.search.accuracy_cache import AccuracyCache, CachedScore

KIND_CODE = {"conv": 0.0, "dwconv": 0.5, "fc": 1.0}


@dataclass(frozen=True)
class Evaluation:
    cut: int
    ratios: tuple[float, ...]  # effective keep ratios of layers 1..cut
    accuracy: float  # validation top-1, percent
    images: int  # validation images actually scored (fewer when stopped early)
    latency: LatencyBreakdown
    shape: PlanShape
    kept_macs_fraction: float
    screened: bool = False  # scored on one chunk only: it could not beat the incumbent
    unpruned: bool = False  # the unpruned model's own score (every cut shares it; A0 is measured from it)
    # standard error (points) of the accuracy drop from the unpruned model, paired over the images scored:
    # a plan that changes few predictions has a precise drop however many images it was scored on
    drop_se: float = 0.0


@dataclass
class Timers:
    prune_s: float = 0.0
    refit_s: float = 0.0
    accuracy_s: float = 0.0
    agents_s: float = 0.0
    test_s: float = 0.0  # the chosen plans' final test accuracy (outside the search)
    evaluations: int = 0
    cache_hits: int = 0  # plans this run had already scored
    store_hits: int = 0  # plans read from the persistent cache instead of being pruned and scored
    early_stops: int = 0
    screened: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


@dataclass
class PlanEvaluator:
    model: UnitModel
    analysis: ModelAnalysis
    groups: list[ChannelGroup]
    latency_model: LatencyModel
    val_x: torch.Tensor
    val_y: torch.Tensor
    calibration: Calibration | None
    prune_config: PruneConfig
    a0: float | None = None  # enables early stopping of infeasible plans
    chunk: int = 500
    timers: Timers = field(default_factory=Timers)
    store: AccuracyCache | None = None  # the persistent cache (accuracy_cache.py), shared across runs
    transfer: str = "fp32"  # the cut tensor's encoding on the wire (wire.py): priced, and simulated when scoring
    _cache: dict[tuple, Evaluation] = field(default_factory=dict)
    _base_ok: torch.Tensor | None = None

    def price(self, cut: int, ratios: list[float] | tuple[float, ...]) -> tuple[PlanShape, LatencyBreakdown]:
        shape = plan_shape(self.analysis, self.groups, cut, list(ratios), self.prune_config.round_to, self.transfer)
        return shape, self.latency_model.predict(self.analysis.model, shape)

    def evaluate(
        self, cut: int, ratios: list[float] | tuple[float, ...], incumbent_ms: float | None = None
    ) -> Evaluation:
        """Price and score a plan; ``incumbent_ms``: the caller's best feasible latency so far (enables screening)."""
        shape, lat = self.price(cut, ratios)
        pruned_any = any(f < 1.0 for f in shape.out_keep)
        # a lossy wire makes even the unpruned model's accuracy depend on where it is cut
        per_cut = pruned_any or lossy_at(cut, self.analysis.n_layers, self.transfer)
        key: tuple = (cut, shape.out_keep[:cut]) if per_cut else ("unpruned",)
        screen = pruned_any and incumbent_ms is not None and lat.total_ms >= incumbent_ms - 1e-9
        hit = self._cache.get(key)
        if hit is not None and (screen or not hit.screened):
            self.timers.cache_hits += 1
            if hit.cut != cut:  # the unpruned model scores the same at every cut
                ones = tuple(1.0 for _ in range(cut))
                hit = Evaluation(
                    cut, ones, hit.accuracy, hit.images, lat, shape, 1.0, unpruned=True, drop_se=hit.drop_se
                )
            # priced now: a plan set swaps the latency model between searches (planset.py), the accuracy stays
            return hit if hit.latency == lat else replace(hit, latency=lat)
        score = _score(self, cut, list(ratios), shape, pruned_any, per_cut, screen)
        screened = screen and score.images < len(self.val_y)  # a one-chunk validation set is scored in full anyway
        self.timers.screened += int(screened)
        eff = tuple(float(f) for f in shape.out_keep[:cut])  # effective keep ratio of each edge layer
        kept = sum(shape.layer_macs) / self.analysis.total_macs
        acc, se = score.accuracy, score.drop_se
        ev = Evaluation(
            cut, eff, acc, score.images, lat, shape, kept, screened=screened, unpruned=not per_cut, drop_se=se
        )
        self._cache[key] = ev
        return ev

    def scored(self) -> list[Evaluation]:
        """Every distinct plan scored so far (early-stopped and screened ones included; see their fields)."""
        return list(self._cache.values())

    def on_wire(self, net: torch.nn.Module, cut: int) -> torch.nn.Module:
        """``net`` as the split runs it: with the cut tensor through this evaluator's wire where that is lossy."""
        if not lossy_at(cut, self.analysis.n_layers, self.transfer):
            return net
        assert isinstance(net, UnitModel)  # the wire goes between its units
        return WireModel(net, self.analysis.points[cut].unit_boundary, self.transfer)

    def _chunks(
        self, stored: CachedScore | None, one_chunk: bool, net: torch.nn.Module | None = None, from_pairs: bool = False
    ) -> ChunkScore | None:
        score = score_in_chunks(
            self.val_x, self.val_y, self.unpruned_correct(), self.chunk, self.a0, stored, one_chunk, net, from_pairs
        )
        if score is not None and score.early_stop:
            self.timers.early_stops += 1
        return score

    def unpruned_correct(self) -> torch.Tensor:
        """Which validation images the unpruned model gets right (computed once): the pairs for each plan's drop."""
        if self._base_ok is None:
            self._base_ok = predict(scoring_copy(self.model), self.val_x) == self.val_y
        return self._base_ok


def _score(
    ev: PlanEvaluator, cut: int, ratios: list[float], shape: PlanShape, pruned_any: bool, per_cut: bool, screen: bool
) -> ChunkScore:
    """The plan's validation score: from the persistent cache as far as it goes, else pruned and scored here."""
    t0 = time.perf_counter()
    store_key = (cut, shape.out_keep[:cut]) if per_cut else (0, ())
    stored = ev.store.get(*store_key) if ev.store is not None else None
    score = ev._chunks(stored, one_chunk=screen)
    t1 = t2 = time.perf_counter()
    if score is None:  # not in the persistent cache, or not far enough: prune and score
        if pruned_any:
            pruned = prune(ev.model, ev.analysis, cut, ratios, ev.calibration, ev.prune_config, ev.groups).model
            net: torch.nn.Module | None = ev.on_wire(scoring_copy(pruned), cut)
        elif per_cut:  # unpruned through a lossy wire
            net = ev.on_wire(scoring_copy(ev.model), cut)
        else:  # the unpruned model itself: its predictions are the pairs, already computed
            net = None
        t1 = time.perf_counter()
        score = ev._chunks(stored, one_chunk=screen, net=net, from_pairs=net is None)
        assert score is not None
        t2 = time.perf_counter()
        if ev.store is not None:
            ev.store.put(*store_key, CachedScore(tuple(score.counts), tuple(score.sizes), tuple(score.changed)))
        ev.timers.evaluations += 1
    else:
        ev.timers.store_hits += 1
        t0 = t1 = t2  # nothing pruned or scored
    # prune() does both the surgery and the refit; the refit dominates when enabled
    ev.timers.refit_s += (t1 - t0) if ev.prune_config.refit and pruned_any else 0.0
    ev.timers.prune_s += (t1 - t0) if not ev.prune_config.refit else 0.0
    ev.timers.accuracy_s += t2 - t1
    return score


class ChunkScore(NamedTuple):
    accuracy: float  # percent of the images scored
    images: int
    counts: list[int]  # correct per chunk
    sizes: list[int]
    changed: list[int]  # per chunk: images whose right/wrong differs from the unpruned model's
    drop_se: float  # paired standard error of the drop, in points
    early_stop: bool = False


def score_in_chunks(
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    base_ok: torch.Tensor,
    chunk: int,
    a0: float | None,
    stored: CachedScore | None,
    one_chunk: bool,
    net: torch.nn.Module | None = None,
    from_pairs: bool = False,
) -> ChunkScore | None:
    """Score chunk by chunk under the stopping rules, taking each chunk's counts from ``stored`` where it has them.

    ``from_pairs``: the plan is the unpruned model, scored from ``base_ok``
    (which images it gets right) rather than by a second pass. Otherwise,
    without ``net``, returns None as soon as a chunk is needed that
    ``stored`` lacks. Stops early once the upper confidence bound falls below ``a0``.
    """
    counts: list[int] = []
    sizes: list[int] = []
    changed: list[int] = []
    correct, seen, base_correct, stopped = 0, 0, 0, False
    for i, start in enumerate(range(0, len(val_y), chunk)):
        y = val_y[start : start + chunk]
        ok0 = base_ok[start : start + chunk]
        if (
            stored is not None
            and i < len(stored.chunk_correct)
            and i < len(stored.chunk_changed)
            and stored.chunk_sizes[i] == len(y)
        ):
            c, d = stored.chunk_correct[i], stored.chunk_changed[i]
        elif from_pairs:
            c, d = int(ok0.sum()), 0
        elif net is None:
            return None
        else:
            ok = predict(net, val_x[start : start + chunk]) == y
            c, d = int(ok.sum()), int((ok != ok0).sum())
        counts.append(c)
        sizes.append(len(y))
        changed.append(d)
        correct += c
        seen += len(y)
        base_correct += int(ok0.sum())
        if one_chunk:
            break
        if a0 is not None and seen < len(val_y):
            p = correct / seen
            ucb = 100.0 * (p + 3.0 * math.sqrt(max(p * (1 - p), 1e-4) / seen))
            if ucb < a0:
                stopped = True
                break
    seen = max(1, seen)
    drop = (base_correct - correct) / seen  # per image: +1 lost, -1 gained, 0 unchanged; mean = the drop
    # one changed image more than counted: a plan that changed none of the images scored is not
    # thereby certain to lose nothing (the "rule of three" worry), and its margin must not be 0
    var = max((sum(changed) + 1) / seen - drop * drop, 0.0)
    return ChunkScore(100.0 * correct / seen, seen, counts, sizes, changed, 100.0 * math.sqrt(var / seen), stopped)


class CompressionStates:
    """Eq. 9 state vectors s_t = (t, type, n, c, h, w, stride, k, a_{t-1}, p, MACs), min-max normalised."""

    def __init__(self, analysis: ModelAnalysis) -> None:
        self.n = analysis.n_layers
        rows = []
        for layer in analysis.layers:
            h, w = (layer.in_shape[1], layer.in_shape[2]) if len(layer.in_shape) == 3 else (1, 1)
            rows.append(
                [
                    layer.index,
                    KIND_CODE[layer.kind],
                    layer.out_channels,
                    layer.in_channels,
                    h,
                    w,
                    layer.stride,
                    layer.kernel,
                    layer.macs,
                ]
            )
        static = np.asarray(rows, dtype=np.float64)
        lo, hi = static.min(0), static.max(0)
        self.static = ((static - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)
        self.dim = static.shape[1] + 2  # + a_{t-1} and p

    def state(self, t: int, prev_action: float, cut: int) -> np.ndarray:
        """State of layer L_t (1-based) when the cut is ``cut``."""
        s = self.static[t - 1]
        # order as in Eq. 9: t, type, n, c, h, w, stride, k, a_{t-1}, p, MACs
        return np.concatenate([s[:8], [prev_action, cut / self.n], s[8:9]]).astype(np.float32)


def partition_state(ratios: tuple[float, ...] | list[float], cut: int, n_layers: int) -> np.ndarray:
    """A_p's state: the current compression strategy (keep ratio of every layer, 1 beyond the cut) and the cut."""
    r = np.ones(n_layers + 1, dtype=np.float32)
    r[: len(ratios)] = ratios
    r[-1] = cut / n_layers
    return r
