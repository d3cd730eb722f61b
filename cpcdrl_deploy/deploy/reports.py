"""The deploy and bench reports as typed artifacts: ``deploy-report.json`` and ``bench-report.json``.

Both are built by their command and validated here when written, so a report
on disk always matches its schema (``docs/schemas/``); readers load them here.
The per-request records and the nested measurements keep the runner's own
keys (``ondevice/runner.py`` writes them on the device, without pydantic).
"""

from __future__ import annotations

from typing import Any

from cpcdrl_deploy.core.artifact import Artifact, Part
from cpcdrl_deploy.serving.manifest import RoleRuntimes


class ReportProfiles(Part):
    edge: str
    cloud: str


class DeployReport(Artifact):
    """One plan deployed: every answer against PyTorch, the measured percentiles, the predictions and their errors."""

    KIND = "cpcdrl-deploy-report"
    VERSION = 1
    REMAKE = "cpcdrl deploy PLAN --edge HOST --out DIR"

    model: str
    method: str
    cut: int
    n_layers: int
    plan: str  # the plan file's path
    edge: str
    cloud: str
    server: str | None
    transfer: str
    quantize: str | None
    runtime: RoleRuntimes = RoleRuntimes()  # reports from before LiteRT heads name none: ONNX Runtime both sides
    requests: int
    answered: int
    fallbacks: int
    errors: int
    aborted: str | None
    server_alive_at_end: bool | None
    warmup_requests: int
    accuracy_pct: float | None
    agreement_with_pytorch_pct: float | None
    bytes_per_request: int | None
    measured: dict[str, Any]  # per part: p50, p90, p99, mean (ms)
    protocol_overhead: dict[str, Any] | None  # p50_ms, pct_of_e2e_p50, bandwidth_bytes_per_s (None on loopback)
    speed_probe: dict[str, dict[str, Any]]  # per side: the reference model's time now vs in the profile
    predicted: dict[str, dict[str, Any]]  # per latency model: its breakdown
    prediction_error_pct: dict[str, float]  # (predicted - measured p50) / measured p50
    prediction_error_vs_mean_pct: dict[str, float]  # against the mean: what sustained-mean tables predict
    plan_estimate_ms: dict[str, float]
    profiles: ReportProfiles
    records: list[dict[str, Any]]  # one per request, as the runner wrote it
    wall_s: float | None = None
    # what the device was given: frames it prepared (and how long that took per frame) or prepared tensors
    inputs: dict[str, Any] | None = None


class BenchReport(Artifact):
    """Many plans run interleaved on one device: per plan, measured and predicted; the fidelity of the ranking."""

    KIND = "cpcdrl-bench"
    VERSION = 1
    REMAKE = "cpcdrl bench PLAN... --edge HOST --out DIR"

    edge: str
    profiles: ReportProfiles
    reference: str
    rounds: int
    block: int
    seconds_per_plan: float
    seed: int
    measured_at: str
    plans: list[dict[str, Any]]  # per plan: its id, path, measured percentiles, predictions, or why it failed
    failed: dict[str, str]
    fidelity: dict[str, Any]
    server_vs_tables: dict[str, Any] | None
    host_load: dict[str, Any] | None
    records: list[dict[str, Any]]
    profiles_of_the_plans: ReportProfiles | None = None  # with fresh profiles: the ones the plans were made with
    wall_s: float | None = None
