"""Accuracy of the CIFAR reference models pruned whole (cut N), with and without the Eq. 2 refit.

    python benchmarks/pruning_accuracy.py --data ../shared/datasets/cifar10-jpeg.tar.gz --out \
        benchmarks/results/pruning_accuracy.json

Every layer but the classifier keeps 0.75, then 0.5, of its output channels
(L1-ranked); the refit uses 256 calibration images from the training split;
accuracy is top-1 on all 10,000 test images.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cpcdrl_deploy.compress.pruning import Calibration, PruneConfig, channel_groups, prune
from cpcdrl_deploy.core.fileio import atomic_write_json
from cpcdrl_deploy.models.data import load_images, split_train
from cpcdrl_deploy.models.evaluate import accuracy_on
from cpcdrl_deploy.models.graph import analyze
from cpcdrl_deploy.models.zoo import load_model

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "datasets" / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--models", default="mobilenet,vgg16")
    ap.add_argument("--limit", type=int, default=None, help="test images (default all)")
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = load_images(args.data)
    test_idx = np.arange(len(data.test)) if args.limit is None else np.arange(args.limit)
    _, calib_idx = split_train(len(data.train), 0, args.calib, seed=0)
    calib_x = data.train.tensors(calib_idx)[0]
    rows = []
    for name in args.models.split(","):
        model = load_model(name, SHARED / "models" / f"{name}-cifar10.pth")
        a = analyze(model, 32, name)
        groups = channel_groups(model, a)
        n = a.n_layers
        base = accuracy_on(model, data.test, test_idx)
        rows.append(
            {"model": name, "ratio": 1.0, "refit": None, "accuracy": base, "macs": a.total_macs, "prune_s": 0.0}
        )
        print(f"{name}: unpruned {base:.2f}%", file=sys.stderr)
        calib = Calibration(calib_x)
        for ratio in (0.75, 0.5):
            for refit in (False, True):
                t = time.perf_counter()
                res = prune(model, a, n, [ratio] * n, calib if refit else None, PruneConfig(refit=refit), groups)
                dt = time.perf_counter() - t
                acc = accuracy_on(res.model, data.test, test_idx)
                macs = analyze(res.model, 32).total_macs
                rows.append(
                    {"model": name, "ratio": ratio, "refit": refit, "accuracy": acc, "macs": macs, "prune_s": dt}
                )
                print(
                    f"{name}: keep {ratio} refit={refit}: {acc:.2f}% ({macs:,} MACs, prune+refit {dt:.1f} s)",
                    file=sys.stderr,
                )
    print("| model | keep ratio | MACs | top-1, plain pruning | top-1, with LS refit (Eq. 2) |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        base = next(r for r in rows if r["model"] == name and r["refit"] is None)
        print(f"| {name} | 1.0 | {base['macs']:,} | {base['accuracy']:.2f} % | - |")
        for ratio in (0.75, 0.5):
            p = next(r for r in rows if r["model"] == name and r["ratio"] == ratio and r["refit"] is False)
            f = next(r for r in rows if r["model"] == name and r["ratio"] == ratio and r["refit"] is True)
            print(f"| {name} | {ratio} | {p['macs']:,} | {p['accuracy']:.2f} % | {f['accuracy']:.2f} % |")
    if args.out:
        atomic_write_json(args.out, {"test_images": int(len(test_idx)), "calibration_images": args.calib, "rows": rows})


if __name__ == "__main__":
    main()
