"""Report helpers: what-if bandwidth pricing of a fixed plan, and the figure."""

from __future__ import annotations

import pytest

from cpcdrl_deploy.report import latency_at_bandwidth, plot_latency_vs_bandwidth

LINK = {"uplink_bytes_per_s": 200_000.0, "downlink_bytes_per_s": 200_000.0, "rtt_ms": 2.0}


def _plan(cut: int, edge: float, transfer: float, cloud: float) -> dict:
    return {"method": "m", "feasible": True, "cut": cut, "n_layers": 7,
            "latency_ms": {"edge_ms": edge, "transfer_ms": transfer, "cloud_ms": cloud, "return_ms": 0.0, "total_ms": edge + transfer + cloud}}


def test_wire_time_scales_with_bandwidth_rtt_and_compute_do_not() -> None:
    p = _plan(3, 5.0, 62.0, 1.0)  # 60 ms on the wire + 2 ms RTT at 200 KB/s
    assert latency_at_bandwidth(p, LINK, 200_000.0) == pytest.approx(68.0)
    assert latency_at_bandwidth(p, LINK, 2_000_000.0) == pytest.approx(5.0 + 6.0 + 2.0 + 1.0)
    assert latency_at_bandwidth(_plan(7, 9.0, 0.0, 0.0), LINK, 1.0) == 9.0  # all on the edge: the link does not matter
    assert latency_at_bandwidth({"feasible": False}, LINK, 1e6) is None


def test_plot_is_written(tmp_path) -> None:
    res = {"model": "tinyvgg", "link": LINK, "plans": [_plan(3, 5.0, 62.0, 1.0), _plan(7, 9.0, 0.0, 0.0), {"method": "x", "feasible": False}]}
    plot_latency_vs_bandwidth(res, tmp_path / "bw.png")
    assert (tmp_path / "bw.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
