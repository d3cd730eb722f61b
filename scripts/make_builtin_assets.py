"""Rebuild the built-in demo data shipped in cpcdrl_deploy/assets/.

    python scripts/make_builtin_assets.py ../shared/datasets/cifar10-jpeg.tar.gz
    cpcdrl train tinyvgg --data ../shared/datasets/cifar10-jpeg.tar.gz --epochs 8 --out \
        cpcdrl_deploy/assets/tinyvgg-cifar10.pth

The sample is 50 training and 50 test images per class, picked by a fixed seed.
"""

from __future__ import annotations

import sys

import numpy as np

from cpcdrl_deploy.models.data import load_cifar10

PER_CLASS = 50


def pick(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.sort(
        np.concatenate([rng.choice(np.flatnonzero(labels == c), PER_CLASS, replace=False) for c in range(10)])
    )


def main(src: str, out: str = "cpcdrl_deploy/assets/cifar10-sample.npz") -> None:
    data = load_cifar10(src)
    rng = np.random.default_rng(2024)
    tr, te = pick(data.train.labels, rng), pick(data.test.labels, rng)
    np.savez_compressed(
        out,
        train_x=data.train.uint8(tr),
        train_y=data.train.labels[tr].astype(np.uint8),
        test_x=data.test.uint8(te),
        test_y=data.test.labels[te].astype(np.uint8),
    )
    print(f"wrote {out}: {len(tr)} train, {len(te)} test images")


if __name__ == "__main__":
    main(*sys.argv[1:])
