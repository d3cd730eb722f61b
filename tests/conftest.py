"""Shared fixtures: the reference data in ../shared, small models, calibration sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CPCDRL_SHARED", REPO.parent / "shared"))
DATASET_TGZ = SHARED / "datasets" / "cifar10-jpeg.tar.gz"
CHECKPOINTS = {"vgg16": SHARED / "models" / "vgg16-cifar10.pth", "mobilenet": SHARED / "models" / "mobilenet-cifar10.pth"}

torch.set_num_threads(2)


def need_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present (CI runs with ../shared beside the repository)")
    return path


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared CIFAR-10 JPEGs, unpacked once per test session."""
    need_shared(DATASET_TGZ)
    cache = tmp_path_factory.mktemp("cache")
    os.environ["CPCDRL_CACHE"] = str(cache)
    from cpcdrl_deploy.data import _extract

    return _extract(DATASET_TGZ)


def make_plan(path: Path, cut: int, keep: float, model: str = "tinyvgg", checkpoint: Path | None = None, data: str = "builtin") -> Path:
    """A plan.json as `optimize` writes it, for a uniform keep ratio at ``cut`` (no search: tests need it fast)."""
    from cpcdrl_deploy.analysis import analyze
    from cpcdrl_deploy.fileio import atomic_write_json
    from cpcdrl_deploy.optimize import PLAN_SCHEMA_VERSION
    from cpcdrl_deploy.pruning import channel_groups, plan_shape
    from cpcdrl_deploy.workflows import builtin_checkpoint
    from cpcdrl_deploy.zoo import file_sha256, get_entry, load_model

    ckpt = checkpoint or builtin_checkpoint(model)
    net = load_model(model, ckpt)
    a = analyze(net, get_entry(model).input_size, model)
    shape = plan_shape(a, channel_groups(net, a), cut, [keep] * cut)
    plan = {
        "schema_version": PLAN_SCHEMA_VERSION, "kind": "cpcdrl-plan", "model": model, "checkpoint": str(ckpt), "checkpoint_sha256": file_sha256(ckpt),
        "method": "fixed", "feasible": True, "profiles": {"edge": "paper", "cloud": "paper", "link": None}, "seed": 0,
        "data": {"source": data, "val_size": 200, "calib_size": 64}, "cut": cut, "n_layers": a.n_layers, "ratios": [keep] * cut,
        "channels": [max(1, int(round(layer.out_channels * k))) for layer, k in zip(a.layers, shape.out_keep)],
        "latency_ms": {"edge_ms": 0.0, "transfer_ms": 0.0, "cloud_ms": 0.0, "return_ms": 0.0, "total_ms": 0.0},
        "cut_bytes": shape.cut_bytes, "prune": {"importance": "l1", "round_to": 8, "refit": True, "calibration_images": 64},
    }
    atomic_write_json(path, plan)
    return path
