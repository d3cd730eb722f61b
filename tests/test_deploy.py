"""`cpcdrl deploy` with the edge on this machine (the testbed version is in test_device_testbed.py)."""

from __future__ import annotations

import json
import socket
import urllib.parse

import pytest
from typer.testing import CliRunner

from cpcdrl_deploy.cli import app
from tests.conftest import make_plan


def test_deploy_locally_end_to_end(tmp_path) -> None:
    plan = make_plan(tmp_path / "plan.json", 3, 0.75)
    res = CliRunner().invoke(
        app, ["deploy", str(plan), "--edge", "local", "-n", "12", "--out", str(tmp_path / "d"), "--format", "json"]
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "d" / "deploy-report.json").read_text())
    assert rep["answered"] == 12 and rep["errors"] == 0 and rep["agreement_with_pytorch_pct"] == 100.0
    e2e = rep["measured"]["e2e_ms"]
    assert 0 < e2e["p50"] <= e2e["p90"] <= e2e["p99"]
    assert rep["bytes_per_request"] > 24 * 16 * 16 * 4  # the cut tensor plus the protocol's JSON header
    assert (tmp_path / "d" / "deploy.png").stat().st_size > 0
    # the server it started is gone
    u = urllib.parse.urlsplit(rep["server"])
    with socket.socket() as s:
        assert s.connect_ex((u.hostname, u.port)) != 0


def test_deploy_bad_inputs_are_one_line(tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["deploy", str(tmp_path / "missing.json")])
    assert res.exit_code == 2 and "plan not found" in res.output and "Traceback" not in res.output
    (tmp_path / "corrupt.json").write_text("{not json")
    res = runner.invoke(app, ["export", str(tmp_path / "corrupt.json")])
    assert res.exit_code == 2 and "cannot read plan" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["serve", str(tmp_path)])  # not an export directory
    assert res.exit_code == 2 and "no manifest.json" in res.output
    plan = make_plan(tmp_path / "plan.json", 3, 0.75)
    d = json.loads(plan.read_text())
    d["model"] = "mobilenet"  # a plan from another model than its checkpoint
    plan.write_text(json.dumps(d))
    res = runner.invoke(app, ["deploy", str(plan), "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and res.output.startswith("error:") and len(res.output.strip().splitlines()) == 1, (
        res.output
    )
    # an unreachable edge is named first, in seconds, before any export or advice about --bind
    res = runner.invoke(
        app,
        [
            "deploy",
            str(make_plan(tmp_path / "p2.json", 3, 0.75)),
            "--edge",
            "nosuchhost.invalid:22",
            "--out",
            str(tmp_path / "d2"),
        ],
    )
    assert res.exit_code == 2 and "cannot reach nosuchhost.invalid" in res.output and not (tmp_path / "d2").exists()


def test_predictions_run_the_medians_through_the_devices_cpu_quota(tmp_path) -> None:
    import json
    from pathlib import Path

    from cpcdrl_deploy.deploy.run import device_quota, predictions
    from cpcdrl_deploy.measure.profile import Profile, load_profile

    prof = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "profile"
    # the facts a profile on a quota testbed records (cpcdrl testbed up --throttle quota)
    pi = {"host": {"kernel_hz": 250, "testbed": {"cpu_share": 0.25, "throttle": "quota", "cfs_period_us": 4000}}}
    quota = device_quota(Profile(name="x", kind="measured", host=pi["host"]))
    assert quota == (0.25, 4.0, 4.0)
    del pi["host"]["testbed"]["throttle"]  # profiles from before --throttle: a quota (the loader says so)
    old = {"schema_version": 1, "name": "x", "kind": "measured", "host": pi["host"]}
    assert device_quota(Profile.from_data(old)) == quota
    pi["host"]["testbed"]["throttle"] = "duty"  # 250 us windows: already in the tables, no quota model
    assert device_quota(Profile(name="x", kind="measured", host=pi["host"])) is None
    assert device_quota(load_profile(prof / "local.json")) is None  # this host, unthrottled
    assert device_quota(Profile(name="x", kind="measured", host={"cpu_quota": "50000 100000", "kernel_hz": 1000})) == (
        0.5,
        100.0,
        1.0,
    )  # read from a cgroup
    assert device_quota(Profile(name="x", kind="measured", host={"cpu_quota": "-1 100000"})) is None
    assert device_quota(Profile(name="x", kind="measured", host={"cpu_quota": "max 100000"})) is None
    measured = json.loads((prof / "pi.json").read_text())  # the emulated Pi's tables, as if measured under a quota
    measured["host"]["testbed"] = {**measured["host"].get("testbed", {}), **pi["host"]["testbed"], "throttle": "quota"}
    (tmp_path / "pi.json").write_text(json.dumps(measured))
    for cut in (0, 14, 28):
        pred = predictions("mobilenet", cut, [1.0] * cut, str(tmp_path / "pi.json"), str(prof / "local.json"), None)
        q, med = pred["table_quota"], pred["table_median"]
        assert med["edge_ms"] <= q["edge_ms"] + 1e-9 <= q["edge_p90_ms"] + 1e-9  # a quota only ever delays
        assert q["cloud_ms"] == med["cloud_ms"] and q["total_ms"] == pytest.approx(
            q["edge_ms"] + q["transfer_ms"] + q["cloud_ms"] + q["return_ms"]
        )
        if cut == 0:
            assert q["edge_ms"] == 0.0


def test_speed_probe_is_the_profiles_whole_model(tmp_path) -> None:
    import gzip

    from cpcdrl_deploy.measure.profiler import build_jobs, probe_model

    jobs, analysis = build_jobs("tinyvgg", (1.0,), tmp_path, lambda s: None)
    data, shape, n = probe_model("tinyvgg")
    head = next(j for j in jobs if j["id"] == f"head{n}")
    assert n == analysis.n_layers and head["input_shape"] == shape
    assert gzip.decompress(data) == gzip.decompress((tmp_path / head["file"]).read_bytes())


@pytest.mark.slow
def test_deploy_scales_the_tables_by_the_speed_probe(tmp_path) -> None:
    """Both sides time the profile's whole-model entry again; table_drift is the anchored tables times each side's
    factor."""
    from cpcdrl_deploy.deploy.run import DeployRequest, deploy, probe_reference
    from cpcdrl_deploy.devices.remote import connect
    from cpcdrl_deploy.measure.profile import load_profile
    from cpcdrl_deploy.measure.profiler import profile_host

    path = tmp_path / "local.json"
    # sized for the suite: two passes of 20 ms per model (the default: four of 100 ms); the probe follows the recorded
    # settings
    profile_host(
        connect("local"),
        ["tinyvgg"],
        path,
        (1.0,),
        warmup=2,
        repeats=6,
        measure_link_too=False,
        rounds=2,
        window_ms=20.0,
        cold_gap_ms=2.0,
    )
    d = json.loads(path.read_text())
    d["link"] = {
        "uplink_bytes_per_s": 1e9,
        "downlink_bytes_per_s": 1e9,
        "rtt_ms": 0.05,
    }  # edge and cloud are this machine: loopback
    path.write_text(json.dumps(d))
    plan = make_plan(tmp_path / "plan.json", 3, 0.75)
    rep = deploy(
        DeployRequest(
            plan, edge="local", requests=24, out=tmp_path / "d", edge_profile=str(path), cloud_profile=str(path)
        )
    )
    sp = rep["speed_probe"]
    assert (
        len(sp["edge"]["block_means_ms"]) == 9 and len(sp["cloud"]["block_means_ms"]) == 4
    )  # every 3 requests and after; 2 before, 2 after
    for role in ("edge", "cloud"):
        # the same machine minutes apart: not a different model (wide: a busy 2-core host has run this probe 3x slower)
        assert 0.2 < sp[role]["factor"] < 5.0, sp
    t, td = rep["predicted"]["table"], rep["predicted"]["table_drift"]
    assert td["edge_ms"] == pytest.approx(t["edge_ms"] * sp["edge"]["factor"]) and td["cloud_ms"] == pytest.approx(
        t["cloud_ms"] * sp["cloud"]["factor"]
    )
    assert td["total_ms"] == pytest.approx(td["edge_ms"] + td["transfer_ms"] + td["cloud_ms"] + td["return_ms"])
    # a profile made before the probe's weights: no reference, so no probe (and no scaled prediction)
    del d["tables"]["tinyvgg"]["weights"]
    path.write_text(json.dumps(d))
    assert probe_reference(load_profile(path), "tinyvgg", rep["n_layers"]) is None


def test_edge_speed_factor_follows_the_requests_between_probe_blocks() -> None:
    from cpcdrl_deploy.deploy.run import _drift

    blocks = [
        {"before_request": 0, "mean_ms": 10.0},
        {"before_request": 2, "mean_ms": 10.0},
        {"before_request": 4, "mean_ms": 30.0},
    ]
    ref = {"ms": 10.0, "profiled_at": None}
    assert _drift(blocks, ref)["factor"] == 1.0  # the blocks' median
    # requests 0-1 fell between two 10 ms blocks, 2-3 between a 10 and a 30 ms one: 10, 10, 20, 20 ms -> median 15
    assert _drift(blocks, ref, [0, 1, 2, 3])["factor"] == 1.5
