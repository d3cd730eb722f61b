"""The two CPCDRL agents. They know nothing of models or latency: vectors in, actions out."""

from cpcdrl_deploy.search.agents.ddpg import DDPGAgent, DDPGConfig
from cpcdrl_deploy.search.agents.dqn import DQNAgent, DQNConfig

__all__ = ["DDPGAgent", "DDPGConfig", "DQNAgent", "DQNConfig"]
