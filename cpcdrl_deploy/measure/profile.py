"""Device profiles: typed dataclasses <-> versioned JSON, units in field names.

A profile describes what a latency model needs about the hosts and the link.
``kind == "analytic"`` profiles give a compute rate per role (the paper's
F_e, F_c) and a link; measured profiles (``cpcdrl profile``) add per-layer
latency tables for the host that measured them.

``--edge NAME`` / ``--cloud NAME`` accept a file path, the name of a profile in
``./device_profiles/`` (where ``cpcdrl profile`` writes by default), or the name
of one shipped in the package (``paper`` is the paper's Sec. IV-A setting).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import field_validator

from cpcdrl_deploy.core.artifact import Artifact, Part
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.fileio import existing

SCHEMA_VERSION = 1
KINDS = ("analytic", "measured")


def table_key(model: str, runtime: str = "onnxruntime") -> str:
    """Where a measured profile keeps ``model``'s tables for an edge ``runtime``: ONNX Runtime's under the model's
    name (as profiles always had them), another runtime's as ``model@runtime`` beside them."""
    return model if runtime == "onnxruntime" else f"{model}@{runtime}"


class ComputeRate(Part):
    """The paper's F: MACs the host executes per second (Eq. 5, 7)."""

    macs_per_s: float


class LinkProfile(Part):
    """The edge-cloud link. The paper uses one bandwidth B and no RTT."""

    uplink_bytes_per_s: float  # edge -> cloud (the cut tensor), Eq. 6
    downlink_bytes_per_s: float  # cloud -> edge (the result)
    rtt_ms: float = 0.0  # added once per request when anything is sent
    count_result_return: bool = False  # the paper ignores the result's return trip
    # what a KServe v2 request costs beyond bytes / uplink + RTT (HTTP framing, the runner's and the server's
    # request paths), added once per request; measured by profile's request probe (request_probe.py), else 0
    request_overhead_ms: float = 0.0
    request_probe: dict[str, Any] | None = None  # that probe's points and fit, and the SSH uplink it replaced

    @property
    def per_request_ms(self) -> float:
        """What every request pays whatever its size: the RTT and the protocol's overhead."""
        return self.rtt_ms + self.request_overhead_ms


class Timing(Part):
    """One timed model or layer (ondevice/timer.py): ``ms`` the sustained mean, the per-run spread beside it."""

    ms: float
    median_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None
    round_means_ms: list[float] = []  # every pass's mean, for a reader asking how much the host wandered
    retimed: int | None = None  # timed again because its passes disagreed; its passes are all of them
    passes: int | None = None  # whole models: timed at this many moments spread over the run, pooled
    cold_median_ms: float | None = None  # whole models: the median run after cold_gap_ms of idle, as served
    cold_gap_ms: float | None = None

    def stat(self, name: str) -> float:
        """The statistic ``name`` ("ms", "median_ms", ...); 0 where this timing lacks it."""
        v = getattr(self, name)
        return float(v) if v is not None else 0.0


class LayerPoint(Timing):
    """A layer timed alone at one (input, output) keep pair; ``io_bytes`` copied in and out of its run."""

    in_keep: float
    out_keep: float
    io_bytes: int


class Misaligned(Timing):
    channels: int  # one channel fewer than the layer has: off the fast channel layout


class LayerRow(Part):
    index: int
    name: str
    kind: str
    in_channels: int
    out_channels: int
    points: list[LayerPoint]
    misaligned: Misaligned | None = None


class WholeTiming(Timing):
    """A whole head (layers 1..cut) or tail (cut+1..N) timed as one model."""

    cut: int


class PrunedHead(WholeTiming):
    """A head pruned uniformly to ``keep``, with each layer's input and output keep as the pruner made them."""

    keep: float
    in_keep: list[float]
    out_keep: list[float]


class SegmentPoint(Timing):
    """A unit of several prunable layers (a residual block) timed whole, every group inside it pruned to ``keep``;
    each of its layers' input and output keep as the pruner made them, and the bytes copied in and out of its run."""

    keep: float
    in_keep: list[float]
    out_keep: list[float]
    io_bytes: int


class SegmentRow(Part):
    """Layers ``first..last`` (one unit between two cut points) timed as one model at the grid's keeps."""

    unit: int
    first: int
    last: int
    points: list[SegmentPoint]


class OverheadPoint(Timing):
    io_bytes: int


class ModelTable(Part):
    """One model's tables on one host (and edge runtime): every layer at the grid's keeps, and whole models."""

    grid: list[float]
    threads: int
    weights: str | None = None  # how the timed models were made (the speed probe must match); None: not recorded
    classes: int | None = None  # the last layer's outputs as timed; None: the zoo entry's default count
    total_macs: int
    run_overhead_ms: float = 0.0
    run_overhead: Timing | None = None  # per statistic: medians are corrected with the median overhead
    run_overhead_points: list[OverheadPoint] = []
    run_overhead_per_io_byte: dict[str, float] = {}
    channel_block: int = 1
    channel_block_probe_ms: dict[str, float] = {}
    dw_alignment: int = 1
    dw_alignment_probe_ms: dict[str, float] = {}
    layers: list[LayerRow]
    segments: list[SegmentRow] = []  # units of several layers, timed whole (older profiles: none)
    heads: list[WholeTiming] = []
    pruned_heads: list[PrunedHead] = []
    tails: list[WholeTiming] = []
    measured_at: str | None = None
    runtime: str | None = None
    host_load: dict[str, Any] | None = None
    timed_with: list[str] | None = None

    def overhead(self, stat: str) -> float:
        """One run's fixed cost in ``stat`` (the sustained one where the profile timed no other)."""
        if self.run_overhead is None:
            return self.run_overhead_ms
        v = getattr(self.run_overhead, stat, None)
        return float(v) if v is not None else self.run_overhead_ms

    def whole(self, side: str) -> list[WholeTiming]:
        """The whole models of ``side``: "heads" (pruned ones included) or "tails"."""
        return [*self.heads, *self.pruned_heads] if side == "heads" else list(self.tails)


class Profile(Artifact):
    """What a latency model needs about one host and the link; ``kind`` says whether it was measured."""

    VERSION = SCHEMA_VERSION
    REMAKE = "cpcdrl profile --host HOST"

    name: str
    kind: str  # "analytic" or "measured" (KINDS): the profile's kind, in place of a document kind
    edge: ComputeRate | None = None  # rate when this profile plays the edge role
    cloud: ComputeRate | None = None  # rate when it plays the cloud role
    link: LinkProfile | None = None
    host: dict[str, Any] | None = None  # facts about the measuring host (measured kind)
    tables: dict[str, ModelTable] = {}  # measured per-model tables, by table_key
    notes: str = ""

    @classmethod
    def check_kind(cls, kind: object) -> bool:
        return kind in KINDS

    @classmethod
    def upgrade(cls, d: dict[str, Any], version: int) -> dict[str, Any]:
        # testbeds before the duty-cycle throttle were quota-limited, and before 4 ms periods used 10 ms ones
        tb = (d.get("host") or {}).get("testbed")
        if isinstance(tb, dict):
            tb.setdefault("throttle", "quota")
            if tb["throttle"] == "quota":
                tb.setdefault("cfs_period_us", 10_000)
        return d

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in KINDS:
            raise ValueError(f"must be one of {', '.join(KINDS)}")
        return v

    def compute_rate(self, role: str) -> ComputeRate:
        rate = self.edge if role == "edge" else self.cloud
        if rate is None:
            raise CpcdrlError(f"profile {self.name!r} has no compute rate for the {role} role")
        return rate


USER_PROFILES = Path("device_profiles")  # relative to the working directory: `cpcdrl profile`'s default output folder


def _shipped() -> Path:
    return Path(str(resources.files("cpcdrl_deploy") / "assets" / "profiles"))


def builtin_profiles() -> list[str]:
    return sorted(p.name[:-5] for p in _shipped().iterdir() if p.name.endswith(".json"))


def resolve_profile_path(name_or_path: str | Path) -> Path:
    p = existing(Path(name_or_path).expanduser())
    if p is not None:
        return p
    for folder in (USER_PROFILES, _shipped()):
        candidate = folder / f"{name_or_path}.json"
        if candidate.is_file():
            return candidate
    raise CpcdrlError(
        f"unknown profile {str(name_or_path)!r}: not a file, and not one of {', '.join(builtin_profiles())}"
    )


def load_profile(name_or_path: str | Path) -> Profile:
    path = resolve_profile_path(name_or_path)
    profile: Profile = Profile.load(path, "profile")
    return profile


def save_profile(profile: Profile, path: str | Path) -> Path:
    return profile.save(path)
