"""The edge runner's uplink estimate and band switching (ondevice/adapt.py), and the adaptive report (pure parts)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from cpcdrl_deploy.deploy.adaptive import analyse, phases, switch_delays
from cpcdrl_deploy.devices.linktrace import TracePoint
from cpcdrl_deploy.ondevice.adapt import UplinkEstimate, band_at, switch_band
from tests.test_planset import _set


def test_a_sample_is_the_bytes_over_the_time_the_link_took() -> None:
    e = UplinkEstimate()
    # 12 KB in 20 ms of round trip, 4 of them the server's compute and 2 fixed: 12 KB in 14 ms
    assert e.sample(12_000, 20.0, 4.0, 2.0) == pytest.approx(12_000 / 0.014)
    assert e.sample(0, 20.0, 4.0, 2.0) is None  # nothing sent: says nothing of the link
    assert e.sample(12_000, 5.0, 4.0, 2.0) is None  # all overhead: no rate to read


def _feed(e: UplinkEstimate, rate: float, n: int, rng: random.Random, noise: float = 0.15) -> list[float]:
    out = []
    for _ in range(n):
        e.add(rate * math.exp(rng.gauss(0.0, noise)))
        out.append(e.bytes_per_s)
    return out


def test_the_estimate_settles_near_a_noisy_rate_and_follows_a_step_within_a_few_requests() -> None:
    rng = random.Random(0)
    e = UplinkEstimate()
    steady = _feed(e, 2e6, 200, rng)
    assert abs(np.median(steady[20:]) / 2e6 - 1) < 0.05 and e.changes <= 2  # few false alarms on 15 % noise
    after = _feed(e, 50e3, 10, rng)
    first = next(i for i, v in enumerate(after) if v < 100e3)
    assert first <= 2 and abs(after[-1] / 50e3 - 1) < 0.25  # a 40x drop: believed after two or three requests
    back = _feed(e, 2e6, 10, rng)
    assert next(i for i, v in enumerate(back) if v > 1e6) <= 2


def test_switching_needs_the_estimate_past_the_hysteresis_both_ways() -> None:
    highs = [100e3, 1e6, None]
    assert band_at(highs, 99e3) == 0 and band_at(highs, 100e3) == 1 and band_at(highs, 5e6) == 2
    assert switch_band(highs, 0, 115e3, 0.2) == 0 and switch_band(highs, 0, 125e3, 0.2) == 1
    assert switch_band(highs, 1, 90e3, 0.2) == 1 and switch_band(highs, 1, 80e3, 0.2) == 0
    assert switch_band(highs, 0, 10e6, 0.2) == 2 and switch_band(highs, 2, 1e3, 0.2) == 0
    assert switch_band([None], 0, 1e9, 0.2) == 0  # one plan: nothing to switch to


def _run(start: float, recs: list[tuple[float, str, int, float]], switches=()) -> dict:
    return {
        "start_at": start,
        "records": [
            {
                "t": start + t,
                "i": k % 4,
                "plan": p,
                "band": b,
                "e2e_ms": ms,
                "prediction": k % 4,
                "estimate_bytes_per_s": 1e5,
            }
            for k, (t, p, b, ms) in enumerate(recs)
        ],
        "switches": [{"t": start + t, "from": a, "to": b, "reason": "x"} for t, a, b in switches],
        "aborted": None,
    }


def test_the_report_judges_each_phase_against_the_best_static_plan() -> None:
    ps = _set(0.2)  # b0 all on the edge, b1 a split, b2 all on the cloud
    points = [TracePoint(0.0, 50e3), TracePoint(10.0, 5e6)]
    assert phases(points, 15.0) == [(0.0, 10.0, 50e3), (10.0, 15.0, 5e6)]
    slow = [(t, "p0", 0, 30.0) for t in np.arange(0.0, 10.0, 0.5)]
    fast = [(10.2, "p0", 0, 30.0)] + [(t, "p2", 2, 6.0) for t in np.arange(10.5, 15.0, 0.5)]
    runs = {
        "adaptive": _run(100.0, slow + fast, [(10.4, 0, 2)]),
        "b0": _run(200.0, [(t, "p0", 0, 30.0) for t in np.arange(0.0, 15.0, 0.5)]),
        "b2": _run(300.0, [(t, "p2", 0, 250.0 if t < 10 else 5.0) for t in np.arange(0.0, 15.0, 0.5)]),
    }
    want = {p: np.arange(4) for p in ("p0", "p1", "p2")}
    rep = analyse(ps, runs, points, 15.0, want, {"p0": "b0", "p1": "b1", "p2": "b2"})
    first, second = rep["phases"]
    assert first["oracle"] == {"plan": "b0", "p50": 30.0} and first["adaptive_over_oracle"] == pytest.approx(1.0)
    assert second["oracle"] == {"plan": "b2", "p50": 5.0} and second["adaptive"]["p50"] == 6.0
    assert rep["switch_delays"] == [
        {"at_s": 10.0, "bytes_per_s": 5e6, "from": "b0", "to": "b2", "delay_s": pytest.approx(0.5)}
    ]
    assert rep["switches"][0]["t"] == pytest.approx(10.4)
    assert all(c["failed"] == 0 and c["agreement_with_pytorch_pct"] == 100.0 for c in rep["checks"].values())
    # a wrong answer is counted against the run that gave it
    runs["b0"]["records"][3]["prediction"] = 9
    rep = analyse(ps, runs, points, 15.0, want, {})
    assert rep["checks"]["b0"]["agreement_with_pytorch_pct"] < 100.0


def test_a_change_the_runner_never_follows_has_no_delay() -> None:
    ps = _set(0.2)
    recs = [{"t": t, "band": 0} for t in np.arange(0.0, 20.0, 0.5)]
    d = switch_delays(ps, recs, [(0.0, 10.0, 50e3), (10.0, 20.0, 5e6)])
    assert len(d) == 1 and d[0]["delay_s"] is None
    # a change inside the hysteresis band prescribes no switch
    t = ps.bands[0].high_bytes_per_s
    assert switch_delays(ps, recs, [(0.0, 10.0, t * 0.9), (10.0, 20.0, t * 1.1)]) == []
