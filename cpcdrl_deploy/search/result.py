"""What ``cpcdrl optimize`` found: every method's plan and how the search went, as a typed artifact.

``--report DIR`` writes it as ``results.json``; ``--format json`` prints it
(without the per-method history). The pruned networks of the chosen plans
travel beside it in memory (``OptimizeResult.models``), never in the file.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import PrivateAttr

from cpcdrl_deploy.core.artifact import Artifact, Part
from cpcdrl_deploy.search.plan import PlanRecord


class UnprunedAccuracy(Part):
    validation: float
    test: float


class OptimizeResult(Artifact):
    KIND = "cpcdrl-optimize"
    VERSION = 1
    OLDEST = 0  # results.json from before kind and schema_version were written: the fields below that existed
    REMAKE = "cpcdrl optimize MODEL --report DIR"

    model: str
    interrupted: bool = False
    a0_test: float
    a0_validation: float
    max_accuracy_loss: float
    unpruned: UnprunedAccuracy
    latency_model: str = ""  # where the latencies come from, in words
    link: dict[str, float | None] = {}  # the link the latency model priced with (latency.LINK_FIELDS)
    input_bytes: int | None = None  # what cut 0 sends: what a split's cut tensor is weighed against
    unpruned_channels: list[int] = []
    plans: list[PlanRecord]
    rewards: dict[str, list[float]] = {}  # per RL method, the reward of each episode
    history: dict[str, list[tuple[int, float, float]]] = {}  # per method, (cut, validation %, ms) of every plan tried
    timers: dict[str, int | float] = {}
    wall_s: float
    since_start_s: float | None = None  # includes loading and the unpruned baselines
    _models: dict[str, torch.nn.Module] = PrivateAttr(default_factory=dict)

    @property
    def models(self) -> dict[str, torch.nn.Module]:
        """Each method's chosen network, pruned and refitted (with ``keep_models``); not written."""
        return self._models

    def plan_of(self, method: str) -> PlanRecord | None:
        return next((p for p in self.plans if p.method == method), None)

    def summary(self) -> dict[str, Any]:
        """The JSON a script gets from ``--format json``: everything but the per-method history."""
        return {k: v for k, v in self.to_data().items() if k != "history"}
