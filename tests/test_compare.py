"""`cpcdrl compare` on the committed emulated-Pi and host profiles: errors per cut, and the order and ratios an
optimiser needs."""

from __future__ import annotations

from cpcdrl_deploy.measure.compare import compare
from tests.conftest import REPO

PROF = REPO / "benchmarks" / "results" / "profile"


def test_compare_reports_rank_and_ratio_fidelity() -> None:
    res = compare("mobilenet", str(PROF / "pi.json"), str(PROF / "local.json"))
    fi = res["fidelity"]
    for side in ("edge", "total"):
        for est in ("table", "analytic"):
            f = fi[f"ranks_{side}_{est}"]
            assert set(f) >= {
                "spearman",
                "kendall",
                "pair_order_right",
                "ratio_error_median_pct",
                "ratio_error_p90_pct",
            }
    # the heads grow with the cut: any sane estimate orders them almost perfectly (what the profile measured)
    assert fi["ranks_edge_table"]["spearman"] > 0.9 and fi["ranks_edge_table"]["pairs_predicted_10pct_apart"] > 100
