from __future__ import annotations

import numpy as np
import pytest
import torch

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.models.data import CIFAR_MEAN, load_images, normalize, split_train, subset


def test_builtin_sample_is_balanced() -> None:
    d = load_images("builtin")
    assert len(d.train) == 500 and len(d.test) == 500
    assert np.bincount(d.test.labels, minlength=10).tolist() == [50] * 10
    x, y = d.test.tensors([0, 1, 2])
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_imagefolder_archive_layout(cifar_dir) -> None:
    d = load_images(cifar_dir)
    assert len(d.train) == 50_000 and len(d.test) == 10_000
    assert d.test.labels[0] == 0 and d.test.labels[-1] == 9  # airplane ... truck


def test_torchvision_python_format(tmp_path) -> None:
    """A directory holding cifar-10-batches-py is read through torchvision."""
    import pickle

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)

    def batch(n: int) -> dict:
        return {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}

    for i in range(1, 6):
        (base / f"data_batch_{i}").write_bytes(pickle.dumps(batch(4)))
    (base / "test_batch").write_bytes(pickle.dumps(batch(3)))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    d = load_images(tmp_path)
    assert len(d.train) == 20 and len(d.test) == 3


def test_normalisation_and_splits() -> None:
    px = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    assert normalize(px)[0, 0, 0, 0].item() == pytest.approx(-CIFAR_MEAN[0] / 0.2023)
    val, cal = split_train(1000, 100, 50, seed=1)
    assert len(set(val) & set(cal)) == 0 and len(val) == 100 and len(cal) == 50
    # one calibration recipe: the same images whatever the validation size (optimize vs evaluate vs export)
    assert list(split_train(1000, 0, 50, seed=1)[1]) == list(cal) == list(split_train(1000, 300, 50, seed=1)[1])
    assert list(split_train(1000, 100, 50, seed=2)[1]) != list(cal)
    with pytest.raises(CpcdrlError):
        split_train(10, 8, 8)
    assert len(subset(100, 10)) == 10 and len(subset(100, None)) == 100
