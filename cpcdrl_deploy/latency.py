"""Latency models: (plan shape) -> milliseconds. Pure: no I/O, no torch.

The analytic model is the paper's Eq. 5-7:
    edge     = sum_{k<=i} MACs_k / F_e
    transfer = S_i / B                      (0 when i = N: nothing is sent)
    cloud    = sum_{k>i} MACs_k / F_c
plus two terms the paper leaves out, both visible and 0 under ``paper``:
the link's round-trip time and the result's return trip (``count_result_return``).
Measured-table models (``cpcdrl profile``) implement the same ``LatencyModel``
protocol, so the optimiser does not care which one it gets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

from cpcdrl_deploy.errors import CpcdrlError
from cpcdrl_deploy.profiles import LinkProfile, Profile
from cpcdrl_deploy.pruning import PlanShape


@dataclass(frozen=True)
class LatencyBreakdown:
    edge_ms: float
    transfer_ms: float
    cloud_ms: float
    return_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.edge_ms + self.transfer_ms + self.cloud_ms + self.return_ms

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "total_ms": self.total_ms}


class LatencyModel(Protocol):
    """Anything that prices a plan; ``describe`` names it in reports."""

    def predict(self, model: str, shape: PlanShape) -> LatencyBreakdown: ...

    def describe(self) -> str: ...


def transfer_ms(n_bytes: int, bytes_per_s: float, rtt_ms: float = 0.0) -> float:
    """Time to move ``n_bytes`` over a link of ``bytes_per_s`` (Eq. 6), plus one RTT."""
    return 1000.0 * n_bytes / bytes_per_s + rtt_ms


@dataclass(frozen=True)
class AnalyticLatencyModel:
    """The paper's MAC-based model (Eq. 5-7)."""

    edge_macs_per_s: float
    cloud_macs_per_s: float
    uplink_bytes_per_s: float
    downlink_bytes_per_s: float
    rtt_ms: float = 0.0
    count_result_return: bool = False

    def predict(self, model: str, shape: PlanShape) -> LatencyBreakdown:
        n = len(shape.layer_macs)
        offloads = shape.cut < n
        return LatencyBreakdown(
            edge_ms=1000.0 * shape.edge_macs / self.edge_macs_per_s,
            transfer_ms=transfer_ms(shape.cut_bytes, self.uplink_bytes_per_s, self.rtt_ms) if offloads else 0.0,
            cloud_ms=1000.0 * shape.cloud_macs / self.cloud_macs_per_s,
            return_ms=transfer_ms(shape.result_bytes, self.downlink_bytes_per_s) if offloads and self.count_result_return else 0.0,
        )

    def describe(self) -> str:
        return (
            f"analytic: F_e={self.edge_macs_per_s / 1e6:g} MMAC/s, F_c={self.cloud_macs_per_s / 1e6:g} MMAC/s, "
            f"B={self.uplink_bytes_per_s / 1e3:g} KB/s up"
        )


def build_latency_model(edge: Profile, cloud: Profile, link: LinkProfile | None = None) -> LatencyModel:
    """The latency model the profiles call for (analytic for now).

    The link comes from ``link``, else the edge profile's, else the cloud profile's.
    """
    link = link or edge.link or cloud.link
    if link is None:
        raise CpcdrlError(f"no link given: neither {edge.name!r} nor {cloud.name!r} holds one; pass --link")
    if edge.kind == "analytic" and cloud.kind == "analytic":
        return AnalyticLatencyModel(
            edge.compute_rate("edge").macs_per_s,
            cloud.compute_rate("cloud").macs_per_s,
            link.uplink_bytes_per_s,
            link.downlink_bytes_per_s,
            link.rtt_ms,
            link.count_result_return,
        )
    raise CpcdrlError(f"profiles of kind {edge.kind!r}/{cloud.kind!r} need the measured latency model, which this cpcdrl does not have yet")
