"""DQN for the partition agent A_p (Alg. 1, Eq. 11), CleanRL-style in one file.

Observation: the current compression strategy (Sec. III-A-1). Action: a cut
point index. Epsilon-greedy over the *allowed* actions only (a DAG model
forbids cuts inside residual blocks), replay buffer, target network.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cpcdrl_deploy.search.agents.common import ReplayBuffer, mlp, polyak_update


@dataclass
class DQNConfig:
    hidden: int = 128
    lr: float = 1e-3
    gamma: float = 0.9  # the paper gives none; each episode's state is the previous strategy, so a short horizon
    batch_size: int = 32
    buffer_size: int = 10_000
    eps_start: float = 1.0
    eps_end: float = 0.05
    target_tau: float = 0.05  # soft target update each learning step
    updates_per_step: int = 4
    seed: int = 0


class DQNAgent:
    def __init__(self, obs_dim: int, n_actions: int, cfg: DQNConfig | None = None) -> None:
        self.cfg = cfg or DQNConfig()
        self.n_actions = n_actions
        self.rng = np.random.default_rng(self.cfg.seed)
        torch.manual_seed(self.cfg.seed)
        self.q = mlp([obs_dim, self.cfg.hidden, self.cfg.hidden, n_actions])
        self.q_target = copy.deepcopy(self.q)
        self.opt = torch.optim.Adam(self.q.parameters(), lr=self.cfg.lr)
        self.buffer = ReplayBuffer(obs_dim, 1, self.cfg.buffer_size, self.rng)
        self.epsilon = self.cfg.eps_start

    def set_exploration(self, progress: float) -> None:
        """Linear epsilon decay; ``progress`` in [0, 1] over the learning episodes."""
        c = self.cfg
        self.epsilon = c.eps_start + (c.eps_end - c.eps_start) * min(1.0, max(0.0, progress))

    @torch.no_grad()
    def q_values(self, obs: np.ndarray) -> np.ndarray:
        return self.q(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))[0].numpy()

    def act(self, obs: np.ndarray, allowed: list[int] | None = None, explore: bool = True) -> int:
        allowed = list(range(self.n_actions)) if allowed is None else allowed
        if explore and self.rng.random() < self.epsilon:
            return int(self.rng.choice(allowed))
        q = self.q_values(obs)
        return int(allowed[int(np.argmax(q[allowed]))])

    def observe(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, done: bool) -> None:
        self.buffer.add(obs, action, reward, next_obs, done)

    def learn(self) -> float | None:
        """Eq. 11: regress Q(s, a) on r + gamma * max_a' Q_target(s', a'). Returns the last loss."""
        if len(self.buffer) < self.cfg.batch_size:
            return None
        loss_v = None
        for _ in range(self.cfg.updates_per_step):
            obs, act, rew, next_obs, done = self.buffer.sample(self.cfg.batch_size)
            with torch.no_grad():
                target = rew + self.cfg.gamma * (1.0 - done) * self.q_target(next_obs).max(1).values
            q = self.q(obs).gather(1, act.long()).squeeze(1)
            loss = F.mse_loss(q, target)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            polyak_update(self.q, self.q_target, self.cfg.target_tau)
            loss_v = float(loss.detach())
        return loss_v
