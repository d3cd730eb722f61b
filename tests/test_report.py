"""Report helpers: what-if bandwidth pricing of a fixed plan, and the figure."""

from __future__ import annotations

import pytest

from cpcdrl_deploy.search.plan import PlanRecord
from cpcdrl_deploy.search.report import explain_plan, latency_at_bandwidth, plot_latency_vs_bandwidth
from cpcdrl_deploy.search.result import OptimizeResult

LINK = {"uplink_bytes_per_s": 200_000.0, "downlink_bytes_per_s": 200_000.0, "rtt_ms": 2.0}


def _record(**fields) -> PlanRecord:
    """A plan record with the fields these helpers read; the rest as any search would fill them."""
    base = {"model": "tinyvgg", "checkpoint": "x.pth", "data": {"source": "builtin"}, "method": "m", "feasible": True}
    return PlanRecord.model_validate(base | fields)


def _plan(cut: int, edge: float, transfer: float, cloud: float) -> PlanRecord:
    lat = {"edge_ms": edge, "transfer_ms": transfer, "cloud_ms": cloud, "return_ms": 0.0}
    return _record(
        cut=cut, n_layers=7, ratios=[1.0] * cut, channels=[8] * 7, latency_ms=lat | {"total_ms": sum(lat.values())}
    )


def test_wire_time_scales_with_bandwidth_rtt_and_compute_do_not() -> None:
    p = _plan(3, 5.0, 62.0, 1.0)  # 60 ms on the wire + 2 ms RTT at 200 KB/s
    assert latency_at_bandwidth(p, LINK, 200_000.0) == pytest.approx(68.0)
    assert latency_at_bandwidth(p, LINK, 2_000_000.0) == pytest.approx(5.0 + 6.0 + 2.0 + 1.0)
    assert latency_at_bandwidth(_plan(7, 9.0, 0.0, 0.0), LINK, 1.0) == 9.0  # all on the edge: the link does not matter
    assert latency_at_bandwidth(_record(feasible=False), LINK, 1e6) is None


def test_plot_is_written(tmp_path) -> None:
    res = OptimizeResult(
        model="tinyvgg",
        link=LINK,
        plans=[_plan(3, 5.0, 62.0, 1.0), _plan(7, 9.0, 0.0, 0.0), _record(method="x", feasible=False)],
        a0_test=80.0,
        a0_validation=80.0,
        max_accuracy_loss=1.0,
        unpruned={"validation": 81.0, "test": 81.0},
        wall_s=1.0,
    )
    plot_latency_vs_bandwidth(res, tmp_path / "bw.png")
    assert (tmp_path / "bw.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_plan_says_what_runs_where_and_what_crosses() -> None:
    chans = [32, 24, 128, 128, 256, 10]
    split = dict(
        method="cpcdrl", cut=2, ratios=[1.0, 0.75], n_layers=6, cut_name="features.4", cut_bytes=4096,
        channels=[32, 16, 128, 128, 256, 10],
    )  # fmt: skip
    text = explain_plan(_record(**split), 12288, chans)
    assert (
        text == "cpcdrl: layers 1-2 run on the edge (up to features.4, pruned to 16 of 24 channels) and send 4,096 B "
        "instead of the 12,288 B image; layers 3-6 run on the server"
    )
    assert "pruned" not in explain_plan(_record(**split | {"channels": chans, "cut_bytes": 6144}), 12288, chans)
    assert explain_plan(_record(**split | {"cut": 0, "ratios": []}), 12288, chans).endswith("sends the 12,288 B image")
    assert explain_plan(_record(**split | {"cut": 6, "ratios": [1.0] * 6}), 12288, chans).endswith(
        "nothing crosses the link"
    )
    assert (
        explain_plan(_record(method="greedy", feasible=False), 12288, chans)
        == "greedy: no plan met the accuracy target"
    )
