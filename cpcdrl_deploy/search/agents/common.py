"""Small pieces both agents use: a replay buffer, MLPs, Polyak averaging."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def mlp(sizes: list[int], out_act: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


@torch.no_grad()
def polyak_update(source: nn.Module, target: nn.Module, tau: float) -> None:
    """target <- tau * source + (1 - tau) * target (SB3's polyak_update)."""
    for p, tp in zip(source.parameters(), target.parameters()):
        tp.mul_(1.0 - tau).add_(p, alpha=tau)


class ReplayBuffer:
    """Fixed-size FIFO of (obs, action, reward, next_obs, done), sampled uniformly."""

    def __init__(self, obs_dim: int, act_dim: int, size: int, rng: np.random.Generator) -> None:
        self.obs = np.zeros((size, obs_dim), np.float32)
        self.next_obs = np.zeros((size, obs_dim), np.float32)
        self.act = np.zeros((size, act_dim), np.float32)
        self.rew = np.zeros(size, np.float32)
        self.done = np.zeros(size, np.float32)
        self.size, self.ptr, self.full = size, 0, False
        self.rng = rng

    def add(self, obs: np.ndarray, act: np.ndarray | float, rew: float, next_obs: np.ndarray, done: bool) -> None:
        i = self.ptr
        self.obs[i], self.act[i], self.rew[i], self.next_obs[i], self.done[i] = obs, act, rew, next_obs, float(done)
        self.ptr = (i + 1) % self.size
        self.full = self.full or self.ptr == 0

    def __len__(self) -> int:
        return self.size if self.full else self.ptr

    def sample(self, batch: int) -> tuple[torch.Tensor, ...]:
        idx = self.rng.integers(0, len(self), batch)
        return tuple(torch.as_tensor(a[idx]) for a in (self.obs, self.act, self.rew, self.next_obs, self.done))
