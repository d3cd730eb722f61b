"""benchmarks/fidelity.py: the rule that marks rounds in which something else ran on the device, and the figures
without them."""

from __future__ import annotations

import pytest

from tests.conftest import load_benchmark

fb = load_benchmark("fidelity")


def _report(slow_rounds: set[int], factor: float = 2.0) -> dict:
    """Three plans over 8 rounds: p0 cloud-only (60 ms of link), p1 and p2 computing 10 and 20 ms on the device.

    In ``slow_rounds`` the device runs ``factor`` times slower (what a second program on the device does)."""
    plans = {"p0": (0, 0.0, 60.0), "p1": (5, 10.0, 30.0), "p2": (10, 20.0, 0.0)}
    records = []
    for rd in range(8):
        f = factor if rd in slow_rounds else 1.0
        for pid, (_, edge, rest) in plans.items():
            for i in range(3):
                e = edge * f + 0.01 * i
                records.append({"plan": pid, "round": rd, "i": i, "edge_ms": e, "e2e_ms": e + rest})
    rows = []
    for pid, (cut, edge, rest) in plans.items():
        e2e = sorted(r["e2e_ms"] for r in records if r["plan"] == pid)
        p50 = e2e[len(e2e) // 2]
        # predictions equal to the undisturbed truth: any error left comes from the disturbed rounds
        rows.append(
            {
                "id": pid,
                "cut": cut,
                "ratios_mean": 0.5 if cut else 1.0,
                "e2e_ms": {"p50": p50},
                "ratio_to_reference": {"median": p50 / 60.0},
                "predicted_ms": {"table": edge + rest},
            }
        )
    return {"plans": rows, "records": records, "rounds": 8, "reference": "p0", "seed": 0, "fidelity": {"table": {}}}


def test_disturbed_rounds_are_the_slow_ones_and_only_those() -> None:
    assert fb.disturbed_rounds(_report(set())) == []
    assert fb.disturbed_rounds(_report({2, 3})) == [2, 3]
    assert fb.disturbed_rounds(_report({2, 3}, factor=1.1)) == []  # ordinary wander stays in


def test_figures_without_the_disturbed_rounds_recover_the_truth() -> None:
    rep = _report({1, 2, 3, 4})  # half the rounds slow: every plan's medians move
    with_all, _, _ = fb.fidelity_sets(rep)
    without, _, _ = fb.fidelity_sets(rep, fb.disturbed_rounds(rep))
    assert with_all["all"]["table"]["ratio_error_p90_pct"] > 5.0
    assert without["all"]["table"]["ratio_error_p90_pct"] == pytest.approx(0.0, abs=0.2)
