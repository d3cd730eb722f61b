from __future__ import annotations

import numpy as np
import pytest

from cpcdrl_deploy.search.agents.ddpg import DDPGAgent, DDPGConfig, truncated_normal


@pytest.mark.slow
def test_ddpg_learns_a_state_dependent_target() -> None:
    """One-step task: reward -(a - target(s))^2 with target = 0.2 + 0.6 s."""
    agent = DDPGAgent(
        1,
        DDPGConfig(
            seed=0, hidden=64, actor_lr=1e-3, critic_lr=3e-3, batch_size=64, updates_per_episode=4, sigma_decay=0.99
        ),
    )
    rng = np.random.default_rng(0)
    for episode in range(500):
        s = np.array([rng.uniform()], np.float32)
        a = agent.random_action() if episode < 50 else agent.act(s)
        agent.observe(s, a, -((a - (0.2 + 0.6 * s[0])) ** 2), s, True)
        if episode >= 50:
            agent.learn()
            agent.decay_exploration()
    for s in (0.0, 0.5, 1.0):
        assert abs(agent.policy(np.array([s], np.float32)) - (0.2 + 0.6 * s)) < 0.1


def test_truncated_normal_stays_in_bounds_and_centres_on_mean() -> None:
    rng = np.random.default_rng(0)
    xs = np.array([truncated_normal(0.5, 0.1, rng) for _ in range(2000)])
    assert xs.min() >= 0.0 and xs.max() <= 1.0
    assert abs(xs.mean() - 0.5) < 0.01
    edge = np.array([truncated_normal(0.95, 0.5, rng) for _ in range(2000)])
    assert edge.max() <= 1.0 and edge.min() >= 0.0
    assert truncated_normal(0.3, 0.0, rng) == 0.3
