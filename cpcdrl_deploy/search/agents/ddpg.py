"""DDPG for the compression agent A_c (Alg. 2, Eq. 12-14), CleanRL-style in one file.

Where the paper is silent the values are AMC's (He et al., ECCV'18,
mit-han-lab/amc): actor and critic 300-300, learning rates 1e-4 / 1e-3,
tau 0.01, batch 64, truncated-normal exploration (sigma 0.5 in AMC, 0.2 here: see DDPGConfig) decaying by
0.95 per episode, discount 1 (the only reward comes at the episode's end).
Actions are in [0, 1]; the environment maps them to keep ratios.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cpcdrl_deploy.search.agents.common import ReplayBuffer, mlp, polyak_update


@dataclass
class DDPGConfig:
    hidden: int = 300
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    gamma: float = 1.0
    tau: float = 0.01
    batch_size: int = 64
    buffer_size: int = 20_000
    sigma_start: float = 0.2  # AMC: 0.5 from a policy at 0.5; ours starts at init_action, so less is enough
    # per learning episode; None: the search picks the rate that reaches sigma_min at
    # its last episode. AMC's 0.95 hits the floor after ~45 episodes, which left our
    # 100-episode runs exploiting the first feasible plan for half their budget
    sigma_decay: float | None = None
    sigma_min: float = 0.02
    updates_per_episode: int = 16  # gradient steps after each episode
    init_action: float | None = 0.9  # actor's output before learning (None: PyTorch's default init, ~0.5)
    seed: int = 0


def truncated_normal(mean: float, sigma: float, rng: np.random.Generator, low: float = 0.0, high: float = 1.0) -> float:
    """A draw from N(mean, sigma^2) truncated to [low, high] (Eq. 12), by rejection."""
    mean = float(np.clip(mean, low, high))
    if sigma <= 0:
        return mean
    for _ in range(1000):
        x = rng.normal(mean, sigma)
        if low <= x <= high:
            return float(x)
    return mean


class DDPGAgent:
    def __init__(self, obs_dim: int, cfg: DDPGConfig | None = None) -> None:
        self.cfg = cfg or DDPGConfig()
        self.rng = np.random.default_rng(self.cfg.seed)
        torch.manual_seed(self.cfg.seed)
        h = self.cfg.hidden
        self.actor = mlp([obs_dim, h, h, 1], nn.Sigmoid())
        if self.cfg.init_action is not None:
            # Start near "keep almost everything" and learn to prune: a policy that
            # starts at 0.5 halves every layer, and on a 28-layer network nothing
            # it tries meets the accuracy target, so it has nothing to learn from.
            last = cast(nn.Linear, self.actor[-2])
            with torch.no_grad():
                last.weight.mul_(0.1)
                last.bias.fill_(float(np.log(self.cfg.init_action / (1.0 - self.cfg.init_action))))
        self.critic = mlp([obs_dim + 1, h, h, 1])
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.cfg.critic_lr)
        self.buffer = ReplayBuffer(obs_dim, 1, self.cfg.buffer_size, self.rng)
        self.sigma = self.cfg.sigma_start

    def decay_exploration(self) -> None:
        decay = 0.95 if self.cfg.sigma_decay is None else self.cfg.sigma_decay  # AMC's, when nobody chose
        self.sigma = max(self.cfg.sigma_min, self.sigma * decay)

    @torch.no_grad()
    def policy(self, obs: np.ndarray) -> float:
        return float(self.actor(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))[0, 0])

    def act(self, obs: np.ndarray, explore: bool = True) -> float:
        mu = self.policy(obs)
        return truncated_normal(mu, self.sigma, self.rng) if explore else mu

    def random_action(self) -> float:
        return float(self.rng.uniform(0.0, 1.0))

    def observe(self, obs: np.ndarray, action: float, reward: float, next_obs: np.ndarray, done: bool) -> None:
        self.buffer.add(obs, action, reward, next_obs, done)

    def learn(self) -> tuple[float, float] | None:
        """Eq. 13-14: critic on r + gamma Q'(s', pi'(s')); actor up the critic's gradient."""
        if len(self.buffer) < self.cfg.batch_size:
            return None
        out = (0.0, 0.0)
        for _ in range(self.cfg.updates_per_episode):
            obs, act, rew, next_obs, done = self.buffer.sample(self.cfg.batch_size)
            with torch.no_grad():
                next_q = self.critic_target(torch.cat([next_obs, self.actor_target(next_obs)], 1)).squeeze(1)
                y = rew + self.cfg.gamma * (1.0 - done) * next_q
            q = self.critic(torch.cat([obs, act], 1)).squeeze(1)
            critic_loss = F.mse_loss(q, y)
            self.critic_opt.zero_grad()
            critic_loss.backward()
            self.critic_opt.step()
            actor_loss = -self.critic(torch.cat([obs, self.actor(obs)], 1)).mean()
            self.actor_opt.zero_grad()
            actor_loss.backward()
            self.actor_opt.step()
            polyak_update(self.actor, self.actor_target, self.cfg.tau)
            polyak_update(self.critic, self.critic_target, self.cfg.tau)
            out = (float(critic_loss.detach()), float(actor_loss.detach()))
        return out
