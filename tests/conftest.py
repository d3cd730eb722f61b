"""Shared fixtures: the reference data in ../shared, small models, calibration sets."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CPCDRL_SHARED", REPO.parent / "shared"))
DATASET_TGZ = SHARED / "datasets" / "cifar10-jpeg.tar.gz"
CHECKPOINTS = {
    "vgg16": SHARED / "models" / "vgg16-cifar10.pth",
    "mobilenet": SHARED / "models" / "mobilenet-cifar10.pth",
    "resnet20": SHARED / "models" / "resnet20-cifar10.pth",
}

torch.set_num_threads(2)
# every test session gets its own caches (unpacked data, accuracies): never the user's
os.environ.setdefault("CPCDRL_CACHE", tempfile.mkdtemp(prefix="cpcdrl-test-cache-"))


def load_benchmark(name: str) -> ModuleType:
    """A script under benchmarks/ as a module (they are scripts, not a package), to test its functions."""
    spec = importlib.util.spec_from_file_location(f"{name}_bench", REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def need_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present (CI runs with ../shared beside the repository)")
    return path


def need_litert() -> None:
    """LiteRT tests need the converter and the runtime (``pip install -e ".[litert]"``); CI sets
    CPCDRL_REQUIRE_LITERT so they never skip there."""
    try:
        import ai_edge_litert  # noqa: F401
        import ai_edge_quantizer  # noqa: F401
        import litert_torch  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CPCDRL_REQUIRE_LITERT"):
            pytest.fail(f"CPCDRL_REQUIRE_LITERT is set but {exc.name} is not installed")
        pytest.skip(f'{exc.name} not installed (pip install -e ".[litert]")')


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """The shared CIFAR-10 JPEGs, unpacked once per test session into the session's cache, where a command given
    the archive itself (``--data .../cifar10-jpeg.tar.gz``) finds them unpacked too."""
    need_shared(DATASET_TGZ)
    from cpcdrl_deploy.models.data import _extract

    return _extract(DATASET_TGZ)


def make_plan(
    path: Path, cut: int, keep: float, model: str = "tinyvgg", checkpoint: Path | None = None, data: str = "builtin"
) -> Path:
    """A plan.json as `optimize` writes it, for a uniform keep ratio at ``cut`` (no search: tests need it fast)."""
    from cpcdrl_deploy.search.optimize import uniform_plan

    return uniform_plan(model, cut, keep, checkpoint, data, val_size=200, calib_size=64).save(path)


@pytest.fixture(scope="module")
def tail_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tinyvgg split after layer 3 at keep 0.75, exported: what the server tests serve."""
    from cpcdrl_deploy.deploy.export import export_plan

    d = tmp_path_factory.mktemp("tail")
    export_plan(make_plan(d / "plan.json", 3, 0.75), d / "e", check_images=16)
    return d / "e"
