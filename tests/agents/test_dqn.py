from __future__ import annotations

import numpy as np

from cpcdrl_deploy.search.agents.dqn import DQNAgent, DQNConfig


def test_dqn_learns_a_contextual_bandit() -> None:
    """Two contexts, four actions; the best action depends on the context."""
    agent = DQNAgent(2, 4, DQNConfig(seed=0, gamma=0.0, hidden=32, lr=3e-3))
    best = {0: 3, 1: 1}
    rng = np.random.default_rng(0)
    for step in range(600):
        ctx = int(rng.integers(0, 2))
        obs = np.eye(2, dtype=np.float32)[ctx]
        agent.set_exploration(step / 400)
        a = agent.act(obs)
        r = 1.0 if a == best[ctx] else -0.2 * abs(a - best[ctx])
        agent.observe(obs, a, r, obs, True)
        agent.learn()
    for ctx, a in best.items():
        assert agent.act(np.eye(2, dtype=np.float32)[ctx], explore=False) == a


def test_dqn_respects_allowed_actions() -> None:
    agent = DQNAgent(3, 5, DQNConfig(seed=1))
    obs = np.zeros(3, np.float32)
    for _ in range(50):
        assert agent.act(obs, allowed=[0, 4]) in (0, 4)
    agent.epsilon = 0.0
    assert agent.act(obs, allowed=[2]) == 2
