"""cpcdrl: split a DNN between an edge device and a cloud server, prune the edge half.

Implements CPCDRL (Tang et al.): a DQN picks the partition point, a DDPG the
per-layer keep ratios of the edge layers; latency from the paper's MAC model or
from tables measured on real hosts.
"""

from __future__ import annotations

__version__ = "0.1.0"
