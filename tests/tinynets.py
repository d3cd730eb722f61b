"""Factories for tests that need a model smaller than the zoo's (``tests.tinynets:two_convs``, as a user names one)."""

from __future__ import annotations

from torch import nn


def two_convs(num_classes: int = 10) -> nn.Module:
    """Two strided convolutions and a classifier: three prunable layers, three cut points, any input size."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )
