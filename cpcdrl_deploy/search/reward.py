"""The shared reward of both agents (Eq. 10), pure and in one place.

    R = exp(eta * (A - A0)) * (1 - alpha) - mu * T / T_ref

- A, A0: top-1 accuracy and the required accuracy, in percent, so eta is "per
  accuracy point". Default eta = 1: one point below A0 scales the first term
  by 0.37, three points by 0.05 -- the paper's "significant penalty".
- alpha: the paper's "compression ratio", read as the fraction of the model's
  MACs that pruning *keeps* (1 = unpruned), so (1 - alpha) is the fraction
  removed: the first term rewards compression that holds accuracy, as AMC's
  accuracy-guaranteed reward does. (Read the other way, alpha = fraction
  removed, the term would punish every compression and fight the latency term.)
- T: predicted latency in ms; T_ref is the fastest unpruned split (what
  Neurosurgeon picks), so mu = 1 makes "as fast as Neurosurgeon" cost 1.
- clip_surplus (default on, a deviation): accuracy above A0 earns no extra
  reward. Eq. 8 asks for A >= A0 and minimum latency; without the clip the
  exponential keeps paying for surplus accuracy (e^3 = 20x at 3 points) and
  pulls the agents away from the constraint's edge.
- no_speed_credit_when_infeasible (default on, a deviation): a plan below A0
  is charged the latency ``infeasible_ms``, which the search sets to the
  *slowest* unpruned split (no plan is slower: pruning only removes work).
  Taken literally, Eq. 10 lets a plan that prunes everything away score
  *higher* than a feasible one: its first term is at most (1 - alpha) <= 1
  however accurate, while its latency term keeps shrinking, and we saw both
  agents drift to such plans. Charging only T_ref was not enough: a feasible
  split slower than T_ref (a deep cut before pruning has found its speed)
  then scored below a gutted plan, and the agents learned to gut. With the
  charge, a gutted plan scores no better than the slowest feasible one, and
  the exponential still ranks near misses above hopeless ones.
- infeasible_slope (default 0.05 per point, a deviation): below A0 a linear
  term is added, infeasible_slope x (A - A0). Without it the region below A0
  is flat (the exponential is e^-5 = 0.007 five points down), the critic
  learns a constant there, and an actor that wandered in has no direction
  out: in the paper experiment the AMC-style agent spent its last 53 of 100
  episodes on plans below A0. The term is 0 at A0, so Eq. 10 is untouched for
  feasible plans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RewardConfig:
    eta: float = 1.0  # per accuracy point (percent)
    mu: float = 1.0  # per unit of T / T_ref
    clip_surplus: bool = True
    no_speed_credit_when_infeasible: bool = True
    infeasible_slope: float = 0.05  # per accuracy point below A0


def reward(
    accuracy: float,
    a0: float,
    kept_macs_fraction: float,
    latency_ms: float,
    ref_latency_ms: float,
    cfg: RewardConfig = RewardConfig(),
    infeasible_ms: float | None = None,
) -> float:
    """Eq. 10 with the conventions above. Accuracy in percent, latency in ms.

    ``infeasible_ms``: the latency charged to a plan below A0 (default T_ref).
    """
    gap = accuracy - a0
    if cfg.clip_surplus:
        gap = min(gap, 0.0)
    if cfg.no_speed_credit_when_infeasible and accuracy < a0:
        latency_ms = max(latency_ms, ref_latency_ms if infeasible_ms is None else infeasible_ms)
    slope = cfg.infeasible_slope * min(accuracy - a0, 0.0)
    return math.exp(cfg.eta * gap) * (1.0 - kept_macs_fraction) - cfg.mu * latency_ms / ref_latency_ms + slope
