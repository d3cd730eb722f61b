"""The library functions behind the CLI commands: each takes plain values, returns a dict.

The CLI only parses options, calls one of these and prints the result, so
scripts and notebooks can call them directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from cpcdrl_deploy.analysis import ModelAnalysis, analyze
from cpcdrl_deploy.data import load_cifar10, split_train, subset
from cpcdrl_deploy.errors import CpcdrlError
from cpcdrl_deploy.evaluate import accuracy_on
from cpcdrl_deploy.progress import Ticker, no_ticker
from cpcdrl_deploy.pruning import Calibration, PruneConfig, prune
from cpcdrl_deploy.zoo import ZOO, UnitModel, file_sha256, get_entry, load_model

Log = Callable[[str], None]
DEMO_MODEL = "tinysplit"


def builtin_checkpoint(model: str) -> Path | None:
    """The checkpoint shipped with the package for ``model``, if any."""
    p = resources.files("cpcdrl_deploy") / "assets" / f"{model}-cifar10.pth"
    return Path(str(p)) if p.is_file() else None


def resolve_checkpoint(model: str, checkpoint: str | Path | None, required: bool) -> Path | None:
    get_entry(model)  # an unknown model is named as such, not as a missing checkpoint
    if checkpoint is not None and str(checkpoint) != "builtin":
        return Path(checkpoint)
    found = builtin_checkpoint(model)
    if found is None and (required or checkpoint is not None):
        raise CpcdrlError(f"no --checkpoint given and no built-in checkpoint for {model!r} (built-in: {DEMO_MODEL})")
    return found


def list_models() -> list[dict[str, object]]:
    return [
        {"name": e.name, "input_size": e.input_size, "classes": e.num_classes, "dataset": e.dataset,
         "builtin_checkpoint": builtin_checkpoint(e.name) is not None, "description": e.description}
        for e in ZOO.values()
    ]


def analyze_model(model: str, checkpoint: str | Path | None = None) -> ModelAnalysis:
    entry = get_entry(model)
    net = load_model(model, resolve_checkpoint(model, checkpoint, required=False) if checkpoint else None)
    return analyze(net, entry.input_size, model)


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
) -> dict[str, object]:
    """Accuracy of ``model`` (pruned by ``ratios`` up to ``cut``) on CIFAR-10 test images."""
    entry = get_entry(model)
    if entry.dataset != "cifar10":
        raise CpcdrlError(f"{model} is an ImageNet-size model; evaluate covers the CIFAR-10 models ({', '.join(n for n, e in ZOO.items() if e.dataset == 'cifar10')})")
    ckpt = resolve_checkpoint(model, checkpoint, required=True)
    net = load_model(model, ckpt)
    base = analyze(net, entry.input_size, model)
    cut = base.n_layers if cut is None else cut
    if not 0 <= cut <= base.n_layers:
        raise CpcdrlError(f"--cut {cut} outside 0..{base.n_layers}")
    values = parse_ratios(ratios, cut)
    ds = load_cifar10(data)
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


def evaluate_saved_plan(
    plan_path: str | Path, data: str | None = None, checkpoint: str | None = None, limit: int | None = None, seed: int = 0, tick: Ticker = no_ticker,
) -> dict[str, object]:
    """Accuracy of a saved plan's pruned model on CIFAR-10 test images: its saved weights, not a new refit."""
    from cpcdrl_deploy.export import rebuild
    from cpcdrl_deploy.plan import load_plan

    plan = load_plan(plan_path)
    original, pruned, ds = rebuild(plan, data, checkpoint, plan_path)
    entry = get_entry(plan.model)
    base, after = analyze(original, entry.input_size, plan.model), analyze(pruned, entry.input_size, plan.model)
    test_idx = subset(len(ds.test), limit, seed)
    t1 = time.perf_counter()
    acc = accuracy_on(pruned, ds.test, test_idx, progress=lambda d, t: tick("test images", d, t))
    cut = plan.cut
    return {
        "model": plan.model, "plan": str(plan_path), "method": plan.method, "data": ds.source, "test_images": int(len(test_idx)), "cut": cut,
        "ratios": list(plan.ratios), "weights": "saved" if plan.weights and plan.pruned else "unpruned or replayed",
        "accuracy": acc, "plan_test_accuracy": plan.accuracy.get("test"),
        "macs_before": base.total_macs, "macs_after": after.total_macs, "edge_macs": after.points[cut].cum_macs, "cut_bytes": after.points[cut].out_bytes,
        "eval_s": time.perf_counter() - t1,
    }
