from __future__ import annotations

import math

import pytest

from cpcdrl_deploy.search.reward import RewardConfig, reward


def test_reward_matches_eq10() -> None:
    cfg = RewardConfig(eta=0.5, mu=2.0, clip_surplus=False, no_speed_credit_when_infeasible=False, infeasible_slope=0.0)
    assert reward(90.0, 91.0, 0.4, 50.0, 100.0, cfg) == pytest.approx(math.exp(-0.5) * 0.6 - 1.0)
    assert reward(93.0, 91.0, 0.4, 50.0, 100.0, cfg) == pytest.approx(math.exp(1.0) * 0.6 - 1.0)


def test_surplus_accuracy_is_clipped_by_default() -> None:
    assert reward(95.0, 91.0, 0.5, 80.0, 100.0) == pytest.approx(0.5 - 0.8)
    assert reward(91.0, 91.0, 0.5, 80.0, 100.0) == reward(99.0, 91.0, 0.5, 80.0, 100.0)


def test_falling_below_a0_costs_more_than_a_modest_speed_up() -> None:
    feasible = reward(91.0, 91.0, 0.5, 80.0, 100.0)
    infeasible_faster = reward(88.0, 91.0, 0.4, 70.0, 100.0)
    assert infeasible_faster < feasible
    # less latency is better at equal accuracy and compression
    assert reward(91.0, 91.0, 0.5, 60.0, 100.0) > reward(91.0, 91.0, 0.5, 80.0, 100.0)


def test_infeasible_plans_get_no_credit_for_speed() -> None:
    """A plan that prunes everything away must not beat a feasible one (it would under literal Eq. 10)."""
    feasible = reward(91.0, 91.0, 0.8, 80.0, 100.0)  # removes 20 % of MACs, 20 % faster than T_ref
    gutted = reward(20.0, 91.0, 0.05, 5.0, 100.0)  # removes 95 %, 20x faster, useless
    assert feasible > gutted
    literal = RewardConfig(no_speed_credit_when_infeasible=False, infeasible_slope=0.0)
    assert reward(20.0, 91.0, 0.05, 5.0, 100.0, literal) > reward(91.0, 91.0, 0.8, 80.0, 100.0, literal)
    # near misses still rank above hopeless ones
    assert reward(90.5, 91.0, 0.7, 60.0, 100.0) > reward(60.0, 91.0, 0.7, 60.0, 100.0)


def test_a_slow_feasible_plan_beats_a_gutted_one_when_charged_the_slowest_split() -> None:
    """Charging infeasible plans only T_ref let a gutted plan beat a feasible deep split slower than T_ref."""
    slow_feasible = reward(91.0, 91.0, 0.9, 150.0, 70.0, infeasible_ms=160.0)  # a deep cut, still being compressed
    gutted = reward(30.0, 91.0, 0.1, 10.0, 70.0, infeasible_ms=160.0)
    assert slow_feasible > gutted
    flat = RewardConfig(infeasible_slope=0.0)
    assert reward(30.0, 91.0, 0.1, 10.0, 70.0, flat) > reward(
        91.0, 91.0, 0.9, 150.0, 70.0, flat
    )  # what T_ref alone did


def test_below_a0_more_accuracy_always_scores_higher() -> None:
    """The infeasible region is not flat: an actor that wandered in has a direction out."""
    far, farther = (
        reward(70.0, 91.0, 0.6, 50.0, 100.0, infeasible_ms=160.0),
        reward(60.0, 91.0, 0.6, 50.0, 100.0, infeasible_ms=160.0),
    )
    assert far - farther == pytest.approx(0.05 * 10, rel=1e-3)  # the exponential alone differs by ~1e-9 here
    # and nothing changes at or above A0
    assert reward(91.0, 91.0, 0.5, 80.0, 100.0) == pytest.approx(0.5 - 0.8)
