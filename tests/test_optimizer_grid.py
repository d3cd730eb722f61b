"""The optimizer grid benchmark at CI size: every method, the reference search, the acceptance figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _grid(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """benchmarks/optimizer_grid.py with ``args``, run from the repository."""
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "optimizer_grid.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


@pytest.mark.slow
def test_tiny_grid_runs_every_method_and_reports(tmp_path) -> None:
    out = tmp_path / "grid"
    res = _grid(["--tiny", "--out", str(out), "--cache", str(tmp_path / "c")])
    assert res.returncode == 0, res.stderr[-2000:]
    d = json.loads((out / "results.json").read_text())
    assert len(d["settings"]) == 2
    for s in d["settings"]:
        methods = {r["method"] for r in s["rows"]}
        assert methods == {
            "cpcdrl",
            "cpcdrl-paper",
            "edge-pruned",
            "random",
            "greedy",
            "neurosurgeon",
            "edge-only",
            "cloud-only",
            "reference",
        }
        ref = next(r for r in s["rows"] if r["method"] == "reference")
        cp = next(r for r in s["rows"] if r["method"] == "cpcdrl")
        assert ref["budget"] == 10 * cp["evaluations"]
        for r in s["rows"]:
            if r["feasible_test"]:
                assert r["test_acc"] >= s["a0_test"] and r["val_acc"] >= s["a0_validation"]
    # the fast link sends everything to the cloud, the slow one keeps everything on the edge
    best = {s["link"]: s["summary"]["best_cut"] for s in d["settings"]}
    assert best == {"5MB/s": 0, "50KB/s": 7}
    assert set(d["acceptance"]) >= {
        "cpcdrl_no_slower_than_every_baseline",
        "cpcdrl_within_3pct_of_reference",
        "interior_best_cut",
    }
    assert "| tinyvgg | paper | 50KB/s |" in (out / "table.md").read_text()
    assert all(s["transfer"] == "fp32" for s in d["settings"])

    # --merge joins grids run apart; a part run with another wire keeps it visible beside the link
    other = tmp_path / "int8"
    other.mkdir()
    d8 = {
        **d,
        "args": {**d["args"], "transfer": "int8"},
        "settings": [{k: v for k, v in s.items() if k != "transfer"} for s in d["settings"]],
    }
    (other / "results.json").write_text(json.dumps(d8))  # a part written before settings recorded their wire
    merged = tmp_path / "merged"
    res = _grid(["--merge", str(out), str(other), "--out", str(merged)], timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads((merged / "results.json").read_text())
    assert [s["transfer"] for s in m["settings"]] == ["fp32", "fp32", "int8", "int8"]
    assert m["acceptance"]["settings"] == 4
    text = (merged / "table.md").read_text()
    assert "| tinyvgg | paper | 50KB/s |" in text and "| tinyvgg | paper | 50KB/s int8 |" in text
    # every seed plan of every method is counted in the miss-rate table (here: one seed, two settings, each wire)
    assert "| cpcdrl | 4 |" in text and "| reference | 4 |" in text

    # a later part's setting replaces an earlier part's with the same key (a rerun under newer code)
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    (rerun / "results.json").write_text(json.dumps({**d, "settings": [{**d["settings"][1], "rerun": True}]}))
    res = _grid(["--merge", str(out), str(rerun), "--out", str(tmp_path / "m2")], timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    m2 = json.loads((tmp_path / "m2" / "results.json").read_text())
    assert [s["link"] for s in m2["settings"]] == [s["link"] for s in d["settings"]]
    assert [bool(s.get("rerun")) for s in m2["settings"]] == [False, True]


@pytest.mark.slow
def test_ablation_runs_the_departures_asked_for(tmp_path) -> None:
    out = tmp_path / "abl"
    res = _grid(
        ["--tiny", "--ablation", "--only", "no-slack,no-margin", "--out", str(out), "--cache", str(tmp_path / "c")]
    )
    assert res.returncode == 0, res.stderr[-2000:]
    d = json.loads((out / "results.json").read_text())
    for s in d["settings"]:
        assert {r["method"] for r in s["rows"]} == {"cpcdrl", "no-slack", "no-margin"}
    assert "no-slack" in (out / "table.md").read_text()


@pytest.mark.slow
def test_episode_convergence_runs_each_budget_and_the_reference(tmp_path) -> None:
    out = tmp_path / "conv"
    res = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "episode_convergence.py"),
            "--model",
            "tinyvgg",
            "--data",
            "builtin",
            "--pair",
            "paper",
            "--link",
            "50KB/s",
            "--losses",
            "2",
            "--episodes",
            "4,8",
            "--seeds",
            "0,1",
            "--val-size",
            "250",
            "--calib",
            "32",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    d = json.loads((out / "results.json").read_text())
    (s,) = d["settings"]
    assert sorted((r.get("episodes"), r.get("seed")) for r in s["rows"] if r["method"] == "cpcdrl") == [
        (4, 0),
        (4, 1),
        (8, 0),
        (8, 1),
    ]
    ref = next(r for r in s["rows"] if r["method"] == "reference")
    first = [r["evaluations"] for r in s["rows"] if r.get("episodes") == 4]
    assert ref["budget"] == 10 * round(sum(first) / len(first))
    assert "| 2 |" in (out / "table.md").read_text()


def test_loss_causes_tell_a_missed_plan_from_one_below_the_margin() -> None:
    from tests.conftest import load_benchmark

    g = load_benchmark("optimizer_grid")

    def setting(cp_ms: float | None, other: dict) -> dict:
        cp = {
            "method": "cpcdrl",
            "seed": 0,
            "evaluations": 10,
            "feasible_val": True,
            "feasible_test": cp_ms is not None,
            "latency_ms": cp_ms or 5.0,
            "cut": 3,
            "val_acc": 91.0,
            "val_drop_se": 0.3,
            "keep_min": 0.5,
        }
        s = {
            "model": "m",
            "pair": "paper",
            "link": "1MB/s",
            "loss": 1.0,
            "a0_validation": 90.0,
            "a0_test": 89.0,
            "rows": [
                cp,
                {
                    "method": "edge-pruned",
                    "seed": 1,
                    "evaluations": 10,
                    "feasible_val": True,
                    "feasible_test": True,
                    "cut": 7,
                    "keep_min": 0.5,
                    **other,
                },
            ],
        }
        s["summary"] = g.summarise(s)
        return s

    grid = [
        setting(
            10.0, {"latency_ms": 9.0, "val_acc": 90.2, "val_drop_se": 0.4}
        ),  # faster, but 0.2 above A0 against a 0.51 margin
        setting(
            10.0, {"latency_ms": 9.0, "val_acc": 91.0, "val_drop_se": 0.4}
        ),  # faster and clears the margin: the search missed it
        setting(None, {"latency_ms": 9.0, "val_acc": 91.0, "val_drop_se": 0.4}),  # CPCDRL's plan misses A0 on test
        setting(8.0, {"latency_ms": 9.0, "val_acc": 91.0, "val_drop_se": 0.4}),  # CPCDRL wins: not listed
    ]
    causes = g.loss_causes(grid, z=1.28)
    assert [c["cause"] for c in causes] == ["margin", "search", "misses"]
    assert causes[1]["faster"]["latency_ms"] == 9.0 and causes[0]["cpcdrl_worst_ms"] == 10.0
    # an unpruned split is exempt from the margin, as in the search
    assert (
        g.loss_causes(
            [setting(10.0, {"latency_ms": 9.0, "val_acc": 90.0, "val_drop_se": 0.4, "keep_min": 1.0})], z=1.28
        )[0]["cause"]
        == "search"
    )


def test_equal_reliability_scores_a_method_by_its_worst_seed() -> None:
    """Issue 38's judge: a lucky seed does not win a setting, a seed missing A0 on test fails the method there."""
    from tests.conftest import load_benchmark

    g = load_benchmark("optimizer_grid")

    def row(method: str, ms: float, cut: int, ok: bool = True, seed: int | None = None) -> dict:
        r = {"method": method, "evaluations": 1, "feasible_val": True, "feasible_test": ok, "latency_ms": ms}
        return {**r, "cut": cut, **({"seed": seed} if seed is not None else {})}

    def setting(*rows: dict) -> dict:
        s = {"model": "m", "pair": "paper", "link": "1MB/s", "loss": 1.0, "n_layers": 8, "rows": list(rows)}
        return {**s, "summary": g.summarise(s)}

    grid = [
        # split wins, CPCDRL's worst seed 8.0 <= 0.9 x Neurosurgeon's 10.0: a win, interior
        setting(row("cpcdrl", 7.0, 3, seed=0), row("cpcdrl", 8.0, 3, seed=1), row("neurosurgeon", 10.0, 4)),
        # a lucky seed (6.0) but the worst (9.5) is within 10 % of Greedy's 10.0 and slower than Edge(pruned)'s 9.0
        setting(
            row("cpcdrl", 6.0, 3, seed=0),
            row("cpcdrl", 9.5, 3, seed=1),
            row("greedy", 10.0, 4),
            row("edge-pruned", 9.0, 8, seed=0),
        ),
        # a CPCDRL seed misses A0 on test: no score, not no slower; an Edge(pruned) seed missing leaves it unscored
        setting(
            row("cpcdrl", 5.0, 8, seed=0),
            row("cpcdrl", 4.0, 8, ok=False, seed=1),
            row("edge-pruned", 4.5, 8, ok=False, seed=0),
            row("edge-only", 12.0, 8),
        ),
        # all on the device is best; CPCDRL's score 5.0 beats Edge(pruned)'s worst seed 6.0
        setting(
            row("cpcdrl", 5.0, 8, seed=0),
            row("edge-pruned", 4.0, 8, seed=0),
            row("edge-pruned", 6.0, 8, seed=1),
            row("cloud-only", 30.0, 0),
        ),
    ]
    j = g.equal_reliability(grid)
    assert j["settings"] == 4 and j["interior_best_cut"] == 2
    assert j["interior_cpcdrl_score_10pct_faster_than_ns_and_greedy"] == 1
    assert j["cpcdrl_score_no_slower_than_every_baseline"] == 2  # the first and the last
    assert j["cpcdrl_seeds"] == 7 and j["cpcdrl_seed_plans_missing_a0_on_test"] == 1
    assert j["goals_met"] == {
        "interior_quarter": True,
        "interior_half_10pct": True,
        "no_slower_90pct": False,
        "misses_2pct": False,
    }


def test_per_seed_split_runs_every_method_on_each_seeds_images(tmp_path) -> None:
    # a seed is one user's run: its own validation and test images (as optimize --seed draws them), every method
    # run on them, each row judged against its own split's A0
    out = tmp_path / "grid"
    args = [
        "--tiny",
        "--seeds",
        "0,1",
        "--links",
        "5MB/s",
        "--skip",
        "cpcdrl-paper,random,reference",
        "--out",
        str(out),
    ]
    res = _grid([*args, "--cache", str(tmp_path / "c")])
    assert res.returncode == 0, res.stderr[-2000:]
    s = json.loads((out / "results.json").read_text())["settings"][0]
    assert s["split"] == "per-seed"
    for method in ("cpcdrl", "edge-pruned", "greedy", "neurosurgeon", "edge-only", "cloud-only"):
        assert sorted(r["seed"] for r in s["rows"] if r["method"] == method) == [0, 1]
    a0 = {r["seed"]: (r["a0_validation"], r["a0_test"]) for r in s["rows"]}
    assert a0[0] != a0[1]  # two splits, two unpruned baselines
    for r in s["rows"]:
        if r["feasible_test"]:
            assert r["test_acc"] >= r["a0_test"] and r["val_acc"] >= r["a0_validation"]
