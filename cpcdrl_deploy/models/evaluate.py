"""Top-1 accuracy of a (pruned) model on a split of images, and whether a model fits a data set at all."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.models.data import ImageData, ImageSet
from cpcdrl_deploy.models.scoring import scoring_copy
from cpcdrl_deploy.models.zoo import device_of

# small batches keep a layer's activations in cache: 64 ran VGG16 20 % and MobileNet
# up to 2x faster than 250 on a 2-core CPU
BATCH = 64


def check_classes(net: nn.Module, data: ImageData, model: str) -> None:
    """A classifier's outputs must be the data's classes: one line saying which counts differ, before any work."""
    linear = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if linear and linear[-1].out_features != len(data.classes):
        raise CpcdrlError(
            f"{model} outputs {linear[-1].out_features} classes (its checkpoint's count); {data.source} has"
            f" {len(data.classes)} class folders"
        )


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = BATCH) -> torch.Tensor:
    """Class predictions (int64) for normalised NCHW ``images``."""
    model.eval()
    dev = device_of(model)
    return torch.cat(
        [model(images[i : i + batch_size].to(dev)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    )


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = BATCH) -> float:
    """Top-1 accuracy in percent."""
    if len(labels) == 0:
        return 0.0
    return float((predict(model, images, batch_size) == labels).float().mean() * 100.0)


def accuracy_on(
    model: nn.Module,
    split: ImageSet,
    indices: np.ndarray,
    chunk: int = 2000,
    progress: Callable[[int, int], None] | None = None,
) -> float:
    """Accuracy (%) over ``indices`` of ``split``, decoding images chunk by chunk to bound memory."""
    model = scoring_copy(model)
    correct = 0
    for start in range(0, len(indices), chunk):
        x, y = split.tensors(indices[start : start + chunk])
        correct += int((predict(model, x) == y).sum())
        if progress:
            progress(min(start + chunk, len(indices)), len(indices))
    return 100.0 * correct / max(1, len(indices))
