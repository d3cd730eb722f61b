"""The rank and ratio statistics bench and compare judge estimates with."""

from __future__ import annotations

import numpy as np
import pytest

from cpcdrl_deploy.measure.fidelity import fidelity, kendall, pair_order, ranks, spearman


def test_rank_statistics() -> None:
    assert list(ranks([3.0, 1.0, 2.0, 1.0])) == [4.0, 1.5, 3.0, 1.5]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)  # 2 concordant, 1 discordant pair
    # tau-b with a tie in y: 2 concordant, 0 discordant, one pair tied in y only -> 2 / sqrt(3 * 2)
    assert kendall([1, 2, 3], [1, 2, 2]) == pytest.approx(2 / np.sqrt(6))
    # pairs predicted >= 10 % apart: (1, 2) and (1, 3) and (2, 3); the estimate orders (2, 3) wrongly
    assert pair_order([1.0, 2.0, 3.0], [1.0, 5.0, 4.0]) == (pytest.approx(2 / 3), 3)
    assert pair_order([1.0, 1.05], [1.0, 2.0]) == (
        pytest.approx(float("nan"), nan_ok=True),
        0,
    )  # no pair far enough apart


def test_fidelity_of_a_perfect_and_a_scaled_estimate() -> None:
    meas = [10.0, 20.0, 40.0, 80.0]
    f = fidelity(
        [5.0, 10.0, 20.0, 40.0], meas, [1.0, 2.0, 4.0, 8.0], [1.0, 2.0, 4.0, 8.0]
    )  # half the level, every ratio right
    assert (
        f["spearman"] == pytest.approx(1.0)
        and f["pair_order_right"] == 1.0
        and f["ratio_error_median_pct"] == pytest.approx(0.0)
    )
    g = fidelity([10.0, 40.0, 20.0, 80.0], meas, [1.0, 4.0, 2.0, 8.0], [1.0, 2.0, 4.0, 8.0])  # two plans swapped
    assert g["spearman"] < 1.0 and g["pair_order_right"] == pytest.approx(5 / 6) and g["ratio_error_p90_pct"] > 50.0
