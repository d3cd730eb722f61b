"""Statistics for judging latency estimates by what an optimiser needs: the order of plans and the ratios between them.

Pure numpy (no scipy): rank correlations (Spearman, Kendall's tau-b), the
share of plan pairs ordered right, paired-ratio errors, percentile bootstrap
intervals. Used by ``cpcdrl bench`` and ``cpcdrl compare``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def bootstrap_ci(
    values: np.ndarray, stat: Callable[[np.ndarray], float], reps: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over ``values`` (resampled with replacement)."""
    if len(values) < 2:
        v = float(stat(values)) if len(values) else float("nan")
        return v, v
    rng = np.random.default_rng(seed)
    boots = np.array([stat(values[rng.integers(0, len(values), len(values))]) for _ in range(reps)])
    a = (1.0 - level) / 2.0
    return float(np.quantile(boots, a)), float(np.quantile(boots, 1.0 - a))


def ranks(x: list[float]) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank."""
    a = np.asarray(x, dtype=float)
    order = np.argsort(a, kind="mergesort")
    r = np.empty(len(a))
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and a[order[j + 1]] == a[order[i]]:
            j += 1
        r[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return r


def spearman(x: list[float], y: list[float]) -> float:
    rx, ry = ranks(x), ranks(y)
    if len(x) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def kendall(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b."""
    n = len(x)
    conc = disc = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif dx == dy:
                conc += 1
            else:
                disc += 1
    denom = np.sqrt((conc + disc + tx) * (conc + disc + ty))
    return float((conc - disc) / denom) if denom else float("nan")


def pair_order(pred: list[float], meas: list[float], min_ratio: float = 1.10) -> tuple[float, int]:
    """Among plan pairs the estimate says differ by at least ``min_ratio``, the share it orders as measured; and
    their count."""
    right = total = 0
    for i in range(len(pred)):
        for j in range(i + 1, len(pred)):
            lo, hi = sorted((pred[i], pred[j]))
            if lo <= 0 or hi / lo < min_ratio:
                continue
            total += 1
            right += int((pred[i] < pred[j]) == (meas[i] < meas[j]))
    return (right / total if total else float("nan")), total


def fidelity(pred_ms: list[float], meas_ms: list[float], pred_ratio: list[float], meas_ratio: list[float]) -> dict:
    """How well one estimate serves an optimiser: rank agreement, pair order, paired-ratio error (%)."""
    order, pairs = pair_order(pred_ms, meas_ms)
    err = [abs(p / m - 1.0) * 100.0 for p, m in zip(pred_ratio, meas_ratio) if m > 0]
    return {
        "spearman": spearman(pred_ms, meas_ms),
        "kendall": kendall(pred_ms, meas_ms),
        "pair_order_right": order,
        "pairs_predicted_10pct_apart": pairs,
        "ratio_error_median_pct": float(np.median(err)) if err else float("nan"),
        "ratio_error_p90_pct": float(np.percentile(err, 90)) if err else float("nan"),
    }
