"""`cpcdrl bench`: plans interleaved on the device, paired ratios, fidelity statistics, failure paths."""

from __future__ import annotations

import json

import numpy as np
import psutil
import pytest
from typer.testing import CliRunner

from cpcdrl_deploy.cli import app
from cpcdrl_deploy.deploy import bench as bench_mod
from cpcdrl_deploy.deploy.bench import BenchRequest, bench, paired_ratio, server_speed, summary_lines
from cpcdrl_deploy.deploy.export import export_plan
from cpcdrl_deploy.measure.fidelity import bootstrap_ci
from cpcdrl_deploy.ondevice import runner as edge_runner
from tests.conftest import make_plan


def test_paired_ratio_is_taken_round_by_round() -> None:
    # the host doubles its speed between rounds; the plan is always 1.5x the reference within a round
    recs = []
    for rd, scale in enumerate((1.0, 0.5, 1.0, 0.5)):
        recs += [
            {"plan": "p0", "round": rd, "e2e_ms": 10.0 * scale},
            {"plan": "p1", "round": rd, "e2e_ms": 15.0 * scale},
        ]
    r = paired_ratio(recs, "p1", "p0")
    assert (
        r["median"] == pytest.approx(1.5) and r["rounds"] == 4 and r["ci95"] == [pytest.approx(1.5), pytest.approx(1.5)]
    )
    lo, hi = bootstrap_ci(np.arange(100.0), np.median)
    assert lo < 49.5 < hi


def test_server_speed_flags_a_server_slower_than_its_tables() -> None:
    # p1's tail is priced 10 ms and takes 16-17 ms; p2's 0.05 ms tail is all fixed cost (0.3 ms) and must not count
    recs = [{"plan": "p1", "round": rd, "server_ms": 16.0 + rd} for rd in range(2)] + [
        {"plan": "p2", "round": rd, "server_ms": 0.3} for rd in range(2)
    ]
    recs.append({"plan": "p0", "round": 0})  # cut N: no server time
    sv = server_speed(recs, {"p1": 10.0, "p2": 0.05})
    assert (
        sv is not None
        and sv["per_round"] == [pytest.approx(1.6), pytest.approx(1.7)]
        and sv["median"] == pytest.approx(1.65)
    )
    report = {"plans": [], "edge": "pi", "rounds": 2, "reference": "p0", "fidelity": {}, "server_vs_tables": sv}
    assert any("1.65x the table estimate's cloud time" in line for line in summary_lines(report))
    report["server_vs_tables"] = server_speed(
        [{**r, "server_ms": 10.5} for r in recs if r["plan"] == "p1"], {"p1": 10.0}
    )
    assert not any("warning" in line for line in summary_lines(report))
    assert server_speed(recs, {}) is None


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    return [make_plan(d / f"p{c}.json", c, k) for c, k in ((3, 0.75), (0, 1.0), (7, 0.5))]


@pytest.mark.slow
def test_bench_locally(plans, tmp_path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "bench",
            *map(str, plans),
            "--edge",
            "local",
            "--seconds",
            "0.5",
            "--min-rounds",
            "3",
            "--slice-ms",
            "20",
            "--out",
            str(tmp_path / "b"),
            "--format",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "b" / "bench-report.json").read_text())
    assert rep["kind"] == "cpcdrl-bench" and rep["failed"] == {} and rep["rounds"] >= 3 and rep["reference"] == "p0"
    rows = {r["id"]: r for r in rep["plans"]}
    assert [rows[p]["cut"] for p in ("p0", "p1", "p2")] == [3, 0, 7]
    for r in rows.values():
        assert r["agreement_with_pytorch_pct"] == 100.0
        assert r["e2e_ms"]["p50_ci95"][0] <= r["e2e_ms"]["p50"] <= r["e2e_ms"]["p50_ci95"][1]
        assert sum(1 for x in rep["records"] if x["plan"] == r["id"] and "e2e_ms" in x) == r["requests"]
    assert rows["p0"]["ratio_to_reference"]["median"] == pytest.approx(1.0)
    assert (
        rows["p2"]["bytes_per_request"] is None and rows["p2"]["transfer_and_cloud_p50_ms"] == 0.0
    )  # cut N sends nothing
    # where the round trip goes: the tail's compute as the server timed it, inside the round trip, beside the tables'
    # cloud term
    for pid in ("p0", "p1"):
        assert (
            0.0 < rows[pid]["cloud_server_p50_ms"] < rows[pid]["transfer_and_cloud_p50_ms"]
            and rows[pid]["predicted_cloud_ms"]["analytic"] > 0
        )
    assert "cloud_server_p50_ms" not in rows["p2"]
    # every round visits every plan, in its own order
    orders = {rd: [x["plan"] for x in rep["records"] if x["round"] == rd] for rd in range(rep["rounds"])}
    assert all(set(o) == {"p0", "p1", "p2"} for o in orders.values())
    assert len({tuple(dict.fromkeys(o)) for o in orders.values()}) > 1
    assert "analytic" in rep["fidelity"] and -1.0 <= rep["fidelity"]["analytic"]["spearman"] <= 1.0
    assert rep["server_vs_tables"]["median"] > 0 and len(rep["server_vs_tables"]["per_round"]) == rep["rounds"]
    hl = rep["host_load"]  # this host's CPUs, lined up with the runner's rounds
    assert len(hl["per_round"]) == rep["rounds"] and all(w is not None for w in hl["per_round"])
    assert (
        len(hl["busy_pct_median_per_cpu"]) == len(psutil.cpu_times(percpu=True))
        and 0.0 <= hl["steal_pct_max_cpu_median"] <= 100.0
    )
    assert (tmp_path / "b" / "bench.png").stat().st_size > 0
    # repriced with the plans' own profiles, every estimate comes back unchanged: fidelity.py's figures "with the
    # plans' profiles" (after bench --profile-before-rounds) price the plans exactly as a plain bench would
    from tests.conftest import load_benchmark

    again = load_benchmark("fidelity").repriced(rep, rep["profiles"]["edge"], rep["profiles"]["cloud"], "onnxruntime")
    for r in again["plans"]:
        assert r["predicted_ms"] == pytest.approx(rows[r["id"]]["predicted_ms"], rel=1e-9)


@pytest.mark.slow
def test_profile_before_rounds_prices_the_plans_with_fresh_profiles(plans, tmp_path, monkeypatch) -> None:
    from cpcdrl_deploy.measure import profiler as profiling
    from cpcdrl_deploy.serving import session as deploy

    order: list[str] = []
    real_profile, real_runner = profiling.profile_host, deploy.run_edge_runner

    def quick_profile(dev, models, out, **kw):  # the real profiler on a short leash: one keep, one short pass
        order.append(f"profile {dev.name}")
        kw.update(grid=(1.0,), warmup=1, repeats=3, rounds=1, window_ms=10.0, cold_gap_ms=0.0, retime_tries=0)
        kw.update(whole_passes=1)  # each whole model once: the order of the steps is under test, not the timing
        return real_profile(dev, models, out, **kw)

    def runner(*a, **k):
        order.append("rounds")
        return real_runner(*a, **k)

    monkeypatch.setattr(profiling, "profile_host", quick_profile)
    monkeypatch.setattr(deploy, "run_edge_runner", runner)
    fresh = tmp_path / "fresh"
    rep = bench(
        BenchRequest(plans[:2], out=tmp_path / "b", seconds=0.2, min_rounds=2, slice_ms=10, profile_before_rounds=fresh)
    )
    assert order == ["profile local", "profile local", "rounds"]  # after the uploads, before the rounds
    assert rep["profiles"] == {"edge": str(fresh / "edge-local.json"), "cloud": str(fresh / "cloud-local.json")}
    plan0 = json.loads(plans[0].read_text())
    assert rep["profiles_of_the_plans"] == {"edge": plan0["profiles"]["edge"], "cloud": plan0["profiles"]["cloud"]}
    from cpcdrl_deploy.measure.profile import load_profile

    edge = load_profile(
        str(fresh / "edge-local.json")
    )  # a local edge has no link to time: it keeps the plans' link, and says so
    assert (
        "tinyvgg" in edge.tables
        and edge.link == load_profile(plan0["profiles"]["edge"]).link
        and "not measured" in edge.notes
    )
    assert rep["fidelity"]["table"]["spearman"] is not None


@pytest.mark.slow
def test_an_interrupted_bench_leaves_the_last_report_whole(plans, tmp_path, monkeypatch) -> None:
    out = tmp_path / "b"
    req = BenchRequest(plans[:2], out=out, seconds=0.2, min_rounds=2, slice_ms=10)
    bench(req)
    before = (out / "bench-report.json").read_bytes()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench_mod, "analyse", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench(req)
    assert (out / "bench-report.json").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_a_plan_whose_head_fails_is_reported_and_the_others_go_on(tmp_path) -> None:
    export_plan(make_plan(tmp_path / "p.json", 7, 0.5), tmp_path / "e", check_images=8)  # cut N: a head and no tail
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx model")
    np.save(tmp_path / "x.npy", np.zeros((4, 3, 32, 32), np.float32))
    spec = [
        {"id": "p0", "head": str(tmp_path / "e" / "head.onnx"), "model": None},
        {"id": "p1", "head": str(tmp_path / "bad.onnx"), "model": None},
    ]
    (tmp_path / "plans.json").write_text(json.dumps(spec))
    rc = edge_runner.main(
        [
            "--inputs",
            str(tmp_path / "x.npy"),
            "--bench",
            str(tmp_path / "plans.json"),
            "--seconds",
            "0.05",
            "--min-rounds",
            "2",
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    rep = json.loads((tmp_path / "r.json").read_text())
    assert (
        rc == 0 and list(rep["failed"]) == ["p1"] and rep["failed"]["p1"].startswith("InvalidProtobuf")
    )  # ONNX Runtime's load error, one line
    assert {r["plan"] for r in rep["records"]} == {"p0"} and all("prediction" in r for r in rep["records"])


def test_bench_bad_inputs_are_one_line(plans, tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["bench", str(plans[0]), "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "at least two" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["bench", str(plans[0]), str(tmp_path / "missing.json"), "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "plan not found" in res.output and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_a_bench_with_one_tail_among_plans_serves_it_under_the_name_it_asks_for(plans, tmp_path) -> None:
    # one plan all on the device and one all on the cloud: the server holds one tail, and the runner must ask for it
    # by the name the server gave it (it asked for 'p0' and got 404 'serving [tinyvgg_tail]')
    out = tmp_path / "b"
    rep = bench(BenchRequest([plans[2], plans[1]], out=out, seconds=0.2, min_rounds=2, slice_ms=10, images=8))
    rows = {r["id"]: r for r in rep["plans"]}
    assert rep["failed"] == {} and rows["p1"]["cut"] == 0 and rows["p1"]["requests"] > 0
    assert all(r["agreement_with_pytorch_pct"] == 100.0 for r in rows.values())


def test_a_bench_where_a_plan_failed_exits_non_zero(plans, tmp_path, monkeypatch) -> None:
    def one_failed(req, log, tick):
        return {"failed": {"p1": "server answered 404"}, "plans": [], "fidelity": {}, "rounds": 0}

    monkeypatch.setattr(bench_mod, "bench", one_failed)
    monkeypatch.setattr(bench_mod, "summary_lines", lambda rep: ["p1: failed"])
    res = CliRunner().invoke(app, ["bench", *map(str, plans), "--out", str(tmp_path / "b")])
    assert res.exit_code == 1 and "1 of 3 plans failed: p1" in res.output
