"""A saved plan's models: the original and the pruned network rebuilt from ``plan.json``, and the pruned one scored.

``export``, ``deploy``, ``bench`` and ``evaluate --plan`` all start from
``rebuild``: with the plan's saved weights the pruned model carries exactly
the tensors the search scored; without them pruning and the refit are
replayed as ``optimize`` ran them.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from cpcdrl_deploy.compress.pruning import Calibration, prune
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.progress import Ticker, no_ticker
from cpcdrl_deploy.models.data import ImageData, load_images, search_split, subset
from cpcdrl_deploy.models.evaluate import accuracy_on, check_classes
from cpcdrl_deploy.models.graph import analyze
from cpcdrl_deploy.models.zoo import UnitModel, file_sha256, get_entry, load_model, preprocess_for
from cpcdrl_deploy.search.plan import Plan, load_plan


def rebuild(
    plan: Plan,
    data: str | Path | None = None,
    checkpoint: str | Path | None = None,
    plan_path: str | Path | None = None,
) -> tuple[UnitModel, UnitModel, ImageData]:
    """(original, pruned) models of ``plan`` and the dataset.

    With the plan's saved weights (``plan.weights``, beside ``plan_path``),
    the pruned model carries exactly those; without, pruning and the refit are
    replayed as ``optimize`` ran them.
    """
    entry = get_entry(plan.model)
    ckpt = Path(checkpoint or plan.checkpoint)
    if not ckpt.is_file():
        raise CpcdrlError(f"checkpoint {ckpt} not found (the plan names it; pass --checkpoint to point elsewhere)")
    if plan.checkpoint_sha256 and file_sha256(ckpt) != plan.checkpoint_sha256:
        raise CpcdrlError(f"{ckpt} is not the checkpoint the plan was made from (SHA-256 differs)")
    original = load_model(plan.model, ckpt)
    analysis = analyze(original, entry.input_size, plan.model)
    if plan.n_layers != analysis.n_layers or len(plan.channels) != analysis.n_layers:
        raise CpcdrlError(f"the plan's layers do not match {plan.model} ({analysis.n_layers} layers)")
    ds = load_images(data or plan.data_source, preprocess_for(plan.model))
    check_classes(original, ds, plan.model)
    cut, ratios, cfg = plan.cut, list(plan.ratios), plan.prune.config()
    pruned = original
    if plan.weights is not None and plan_path is not None and plan.pruned:
        # the very weights the search scored: the structure from the surgery alone, then the saved tensors
        wfile = Path(plan_path).parent / plan.weights.file
        if not wfile.is_file():
            raise CpcdrlError(f"the plan's weights {wfile} are missing")
        blob = wfile.read_bytes()
        if hashlib.sha256(blob).hexdigest() != plan.weights.sha256:
            raise CpcdrlError(
                f"{wfile} does not match the plan's SHA-256: refusing weights that are not the ones the search scored"
            )
        pruned = prune(original, analysis, cut, ratios, None, replace(cfg, refit=False)).model
        try:
            pruned.load_state_dict(torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True), strict=True)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CpcdrlError(f"{wfile} does not fit the plan's pruned model: {str(exc).splitlines()[0]}") from None
    elif plan.pruned:
        calib = Calibration(calibration_images(plan, ds), cfg.points_per_image, plan.seed) if cfg.refit else None
        pruned = prune(original, analysis, cut, ratios, calib, cfg).model
    after = analyze(pruned, entry.input_size, plan.model)
    channels = [layer.out_channels for layer in after.layers]
    if channels != list(plan.channels):
        raise CpcdrlError(f"rebuilding the plan gave channels {channels}, the plan says {list(plan.channels)}")
    return original, pruned, ds


def calibration_images(plan: Plan, ds: ImageData) -> torch.Tensor:
    """The training images the plan's refit was calibrated on (optimize's recipe, data.search_split)."""
    _, idx = search_split(len(ds.train), plan.val_size or 0, plan.calib_size or 256, plan.seed)
    return ds.train.tensors(idx)[0]


def evaluate_saved_plan(
    plan_path: str | Path,
    data: str | None = None,
    checkpoint: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    tick: Ticker = no_ticker,
) -> dict[str, Any]:
    """Accuracy of a saved plan's pruned model on CIFAR-10 test images: its saved weights, not a new refit."""
    plan = load_plan(plan_path)
    original, pruned, ds = rebuild(plan, data, checkpoint, plan_path)
    entry = get_entry(plan.model)
    base, after = analyze(original, entry.input_size, plan.model), analyze(pruned, entry.input_size, plan.model)
    test_idx = subset(len(ds.test), limit, seed)
    t1 = time.perf_counter()
    acc = accuracy_on(pruned, ds.test, test_idx, progress=lambda d, t: tick("test images", d, t))
    cut = plan.cut
    return {
        "model": plan.model,
        "plan": str(plan_path),
        "method": plan.method,
        "data": ds.source,
        "test_images": int(len(test_idx)),
        "cut": cut,
        "ratios": list(plan.ratios),
        "weights": "saved" if plan.weights and plan.pruned else "unpruned or replayed",
        "accuracy": acc,
        "plan_test_accuracy": plan.accuracy.test,
        "macs_before": base.total_macs,
        "macs_after": after.total_macs,
        "edge_macs": after.points[cut].cum_macs,
        "cut_bytes": after.points[cut].out_bytes,
        "eval_s": time.perf_counter() - t1,
    }
