"""Accuracy of a zoo model pruned at given keep ratios up to a cut (``cpcdrl evaluate``), without a search."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cpcdrl_deploy.compress.pruning import Calibration, PruneConfig, prune
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.progress import Ticker, no_ticker
from cpcdrl_deploy.models.data import load_images, split_train, subset
from cpcdrl_deploy.models.evaluate import accuracy_on, check_classes
from cpcdrl_deploy.models.graph import analyze
from cpcdrl_deploy.models.zoo import UnitModel, file_sha256, get_entry, load_model, preprocess_for, resolve_checkpoint

Log = Callable[[str], None]


def parse_ratios(text: str | None, cut: int) -> list[float]:
    """``"0.5"`` -> the same ratio for layers 1..cut; ``"0.5,0.7,..."`` -> exactly ``cut`` ratios."""
    if text is None:
        return [1.0] * cut
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CpcdrlError(f"--ratios {text!r}: expected numbers separated by commas") from None
    if len(values) == 1:
        values = values * cut
    if len(values) != cut:
        raise CpcdrlError(f"--ratios has {len(values)} values; cut {cut} needs 1 or {cut}")
    bad = [v for v in values if not 0.0 < v <= 1.0]
    if bad:
        raise CpcdrlError(f"--ratios: keep ratios must be in (0, 1], got {bad[0]}")
    return values


def evaluate_plan(
    model: str,
    checkpoint: str | Path | None,
    data: str | Path,
    ratios: str | None = None,
    cut: int | None = None,
    limit: int | None = None,
    calib_size: int = 256,
    prune_config: PruneConfig | None = None,
    seed: int = 0,
    log: Log | None = None,
    tick: Ticker = no_ticker,
) -> dict[str, Any]:
    """Accuracy of ``model`` (pruned by ``ratios`` up to ``cut``) on CIFAR-10 test images."""
    entry = get_entry(model)
    ckpt = resolve_checkpoint(model, checkpoint, required=True)
    net = load_model(model, ckpt)
    base = analyze(net, entry.input_size, model)
    cut = base.n_layers if cut is None else cut
    if not 0 <= cut <= base.n_layers:
        raise CpcdrlError(f"--cut {cut} outside 0..{base.n_layers}")
    values = parse_ratios(ratios, cut)
    ds = load_images(data, preprocess_for(model))
    check_classes(net, ds, model)
    test_idx = subset(len(ds.test), limit, seed)
    cfg = prune_config or PruneConfig()
    t0 = time.perf_counter()
    pruned: UnitModel = net
    result = None
    if any(v < 1.0 for v in values):
        calib = None
        if cfg.refit:
            _, calib_idx = split_train(len(ds.train), 0, min(calib_size, len(ds.train)), seed)
            calib = Calibration(ds.train.tensors(calib_idx)[0], cfg.points_per_image, seed)
        result = prune(net, base, cut, values, calib, cfg)
        pruned = result.model
    prune_s = time.perf_counter() - t0
    after = analyze(pruned, entry.input_size, model)
    if log:
        log(f"evaluating on {len(test_idx)} test images ({ds.source})")
    t1 = time.perf_counter()
    acc = accuracy_on(pruned, ds.test, test_idx, progress=lambda d, t: tick("test images", d, t))
    return {
        "model": model,
        "checkpoint": str(ckpt),
        "checkpoint_sha256": file_sha256(ckpt) if ckpt else None,
        "data": ds.source,
        "test_images": int(len(test_idx)),
        "cut": cut,
        "ratios": result.ratios if result else values,
        "refit": bool(result and cfg.refit),
        "refitted_layers": result.refitted if result else [],
        "accuracy": acc,
        "macs_before": base.total_macs,
        "macs_after": after.total_macs,
        "edge_macs": after.points[cut].cum_macs,
        "cut_bytes": after.points[cut].out_bytes,
        "prune_s": prune_s,
        "eval_s": time.perf_counter() - t1,
    }
