"""Train a zoo or factory model on an image folder (CIFAR-10 or the user's) and save a pytorch-cifar style checkpoint.

The recipe is the one the reference checkpoints in ``../shared/models`` were
trained with: SGD (Nesterov, momentum 0.9, weight decay 5e-4), one-cycle
learning rate, label smoothing 0.1, random 4-pixel-padded crops and flips.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cpcdrl_deploy.core.fileio import atomic_write_bytes
from cpcdrl_deploy.core.progress import Ticker, no_ticker
from cpcdrl_deploy.models.data import ImageData, subset
from cpcdrl_deploy.models.evaluate import accuracy_on
from cpcdrl_deploy.models.zoo import build_model


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    max_lr: float = 0.1
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    seed: int = 0
    limit: int | None = None  # train on at most this many images (quick runs)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crops of the input padded by an eighth of its side (4 pixels at 32) and horizontal flips."""
    n, side = x.shape[0], x.shape[-1]
    pad = max(1, side // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    out = torch.stack([padded[i, :, dy[i] : dy[i] + side, dx[i] : dx[i] + side] for i in range(n)])
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def train(
    model_name: str,
    data: ImageData,
    out: str | Path,
    cfg: TrainConfig,
    log: Callable[[str], None] = print,
    tick: Ticker = no_ticker,
) -> dict[str, Any]:
    """Train from scratch for ``data``'s classes; write ``{"net", "acc", "epoch", ...}`` to ``out`` atomically.

    ``data`` comes prepared for the model (``zoo.preprocess_for``); each
    batch is prepared when it is drawn, so images at any size never sit in
    memory all at once.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = build_model(model_name, len(data.classes))
    idx = subset(len(data.train), cfg.limit, cfg.seed)
    steps = cfg.epochs * ((len(idx) + cfg.batch_size - 1) // cfg.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.max_lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.max_lr, total_steps=steps)
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = torch.randperm(len(idx), generator=gen)
        total, loss_sum = 0, 0.0
        for b in range(0, len(idx), cfg.batch_size):
            sel = perm[b : b + cfg.batch_size]
            xb, yb = data.train.tensors(idx[sel.numpy()])
            loss = F.cross_entropy(model(_augment(xb, gen)), yb, label_smoothing=cfg.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            tick("training (batches, all epochs)", step, steps)
            total += len(sel)
            loss_sum += loss.item() * len(sel)
        log(f"epoch {epoch}/{cfg.epochs}: train loss {loss_sum / total:.3f}")
    model.eval()
    acc = accuracy_on(model, data.test, np.arange(len(data.test)), progress=lambda d, t: tick("test images", d, t))
    log(f"test top-1 {acc:.2f}% on {len(data.test)} images")
    import io

    buf = io.BytesIO()
    prep = data.train.prep
    meta = {"classes": list(data.classes), "input_size": prep.size, "mean": list(prep.mean), "std": list(prep.std)}
    torch.save({"net": model.state_dict(), "acc": acc, "epoch": cfg.epochs, **meta}, buf)
    atomic_write_bytes(out, buf.getvalue())
    return {
        "model": model_name,
        "out": str(out),
        "acc": acc,
        "epochs": cfg.epochs,
        "train_images": len(idx),
        "test_images": len(data.test),
    }
