"""The edge runtimes: a LiteRT head exported, checked and deployed beside ONNX Runtime; a device without the runtime
is told what to install."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cpcdrl_deploy.cli import app
from cpcdrl_deploy.compress.pruning import channel_groups, plan_shape
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.deploy.export import export_plan
from cpcdrl_deploy.devices.remote import LocalDevice
from cpcdrl_deploy.measure.latency import FastestRuntime, build_latency_model, edge_runtimes, link_fields
from cpcdrl_deploy.measure.profile import ModelTable, Profile, load_profile, table_key
from cpcdrl_deploy.measure.runtimes import check_runtime
from cpcdrl_deploy.models.data import subset
from cpcdrl_deploy.models.graph import analyze
from cpcdrl_deploy.models.zoo import build_model
from cpcdrl_deploy.ondevice import runner as edge_runner
from cpcdrl_deploy.search.optimize import plan_runtime
from cpcdrl_deploy.search.plan import load_plan
from cpcdrl_deploy.search.plan_model import rebuild
from cpcdrl_deploy.serving.manifest import load_manifest, ort_session
from tests.conftest import REPO, make_plan, need_litert


@pytest.fixture(scope="module")
def litert_export(tmp_path_factory):
    need_litert()
    d = tmp_path_factory.mktemp("litert")
    plan = make_plan(d / "plan.json", 3, 0.75)
    return plan, d / "e", export_plan(plan, d / "e", check_images=64, runtime="litert")


def test_litert_head_is_exported_checked_and_recorded(litert_export) -> None:
    plan_path, out, m = litert_export
    assert sorted(p.name for p in out.iterdir()) == ["full.onnx", "head.tflite", "manifest.json", "tail.onnx"]
    assert m.runtime.head == "litert" and m.runtime.tail == "onnxruntime" and m.files["head"].runtime == "litert"
    assert m.check["litert_head_max_abs"] <= 1e-4 and m.check["agreement_with_pytorch_pct"] == 100.0
    assert load_manifest(out).files["head"].file == "head.tflite"  # hashes and the head/tail pair check hold
    # the head as the device runs it (edge_runner.load_model picks LiteRT by the suffix), before the ONNX tail
    head, tail = edge_runner.load_model(str(out / "head.tflite")), ort_session(out / "tail.onnx")
    assert head.runtime == "litert" and head.outputs[0][0] == "cut"
    _, pruned, ds = rebuild(load_plan(plan_path))
    x, _ = ds.test.tensors(np.arange(200))
    with torch.no_grad():
        want = pruned(x).numpy()
    got = np.concatenate([tail.run(None, head.run(x[i : i + 1].numpy()))[0] for i in range(len(x))])
    assert np.abs(got - want).max() <= 1e-4 and (got.argmax(1) == want.argmax(1)).mean() >= 0.999


@pytest.mark.slow
def test_deploy_with_a_litert_head(litert_export, tmp_path) -> None:
    plan_path, _, _ = litert_export
    res = CliRunner().invoke(
        app,
        [
            "deploy",
            str(plan_path),
            "--edge",
            "local",
            "--runtime",
            "litert",
            "-n",
            "20",
            "--no-probe",
            "--out",
            str(tmp_path / "d"),
            "--format",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "d" / "deploy-report.json").read_text())
    assert rep["runtime"]["head"] == "litert" and rep["answered"] == 20 and rep["agreement_with_pytorch_pct"] == 100.0


def test_missing_runtime_names_the_package(monkeypatch, tmp_path) -> None:
    """On the device: a head whose runtime is not installed is one line naming what to install."""
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # None in sys.modules: the import fails
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(edge_runner.MissingRuntime, match="pip install ai-edge-litert"):
        edge_runner.load_model(str(tmp_path / "head.tflite"))

    class NoLiteRT(LocalDevice):
        def run(self, cmd, timeout=None, stdin=None):
            return 0, "3.11.7 2.4.6 None\n", ""  # what the probe prints on a device without the package

    with pytest.raises(CpcdrlError, match="lacks ai-edge-litert; on the device run: .* -m pip install ai-edge-litert"):
        check_runtime(NoLiteRT(), "litert")
    assert "onnxruntime" in check_runtime(LocalDevice(), "onnxruntime")  # this host has it


def test_a_corrupt_tflite_head_is_reported_not_hung_on(tmp_path) -> None:
    need_litert()
    (tmp_path / "head.tflite").write_bytes(b"not a flatbuffer" * 8)
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 32, 32), np.float32))
    rc = edge_runner.main(
        [
            "--inputs",
            str(tmp_path / "x.npy"),
            "--head",
            str(tmp_path / "head.tflite"),
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    assert rc == 2 and not (tmp_path / "r.json").exists()


def test_litert_int8_head_is_calibrated_checked_and_runs_on_float(litert_export, tmp_path) -> None:
    """--quantize int8: the head is fully int8 inside; the runner quantises the image and dequantises the cut tensor."""
    plan_path, _, _ = litert_export
    m = export_plan(plan_path, tmp_path / "q", quantize="int8", check_images=64, runtime="litert").to_data()
    head_spec = m["files"]["head"]
    assert (
        head_spec["runtime"] == "litert"
        and head_spec["precision"] == "int8"
        and m["quantize"] == "int8"
        and m["check"]["lossy"]
    )
    head = edge_runner.load_model(str(tmp_path / "q" / "head.tflite"))
    assert head.q_in and head.q_out and head.outputs[0][1] == "FP32"  # int8 inside, float at the boundaries
    assert head.it.get_input_details()[0]["dtype"] == np.int8
    _, pruned, ds = rebuild(load_plan(plan_path))
    x, _ = ds.test.tensors(subset(len(ds.test), 64, load_plan(plan_path).seed))  # export's own check images
    tail = ort_session(tmp_path / "q" / "tail.onnx")
    got = np.concatenate([tail.run(None, head.run(x[i : i + 1].numpy()))[0] for i in range(len(x))])
    with torch.no_grad():
        want = pruned(x).numpy()
    agree = float((got.argmax(1) == want.argmax(1)).mean() * 100)
    assert (
        agree == pytest.approx(m["check"]["agreement_with_pytorch_pct"]) and agree >= 90.0
    )  # what export reports is what runs
    assert 0 < np.abs(got - want).max() < 0.5 * np.abs(want).max()  # quantised, not broken


def test_litert_refuses_what_it_does_not_build_yet(tmp_path) -> None:
    plan = make_plan(tmp_path / "plan.json", 3, 0.75)
    with pytest.raises(CpcdrlError, match="--runtime litert sends the cut tensor in fp32"):
        export_plan(plan, tmp_path / "e", transfer="int8", runtime="litert")
    with pytest.raises(CpcdrlError, match="--runtime must be one of"):
        export_plan(plan, tmp_path / "e", runtime="tensorrt")
    res = CliRunner().invoke(
        app, ["deploy", str(plan), "--runtime", "litert", "--fallback", "--out", str(tmp_path / "d")]
    )
    assert res.exit_code == 2 and "--fallback" in res.output and len(res.output.strip().splitlines()) == 1


def _two_runtime_profile(factor: float) -> Profile:
    """The measured pi profile with a made-up second runtime: its VGG16 tables scaled by ``factor`` (a choice to
    test, not a measurement)."""
    p = load_profile(str(REPO / "benchmarks" / "results" / "profile" / "pi.json"))
    t = p.tables["vgg16"].model_dump()
    for row in t["layers"]:
        for pt in row["points"]:
            pt["ms"] *= factor
            pt["median_ms"] = pt.get("median_ms", pt["ms"]) * factor
    for side in ("heads", "pruned_heads"):
        for h in t.get(side, []):
            for k in ("ms", "median_ms"):
                if h.get(k):
                    h[k] *= factor
    measured = {
        k: v for k, v in p.tables.items() if "@" not in k
    }  # only ONNX Runtime's measured tables, whatever the file holds
    return p.model_copy(update={"tables": {**measured, table_key("vgg16", "litert"): ModelTable.model_validate(t)}})


@pytest.mark.parametrize("factor,expect", [(0.5, "litert"), (2.0, "onnxruntime")])
def test_the_optimiser_prices_each_plan_with_the_faster_runtime(factor: float, expect: str) -> None:
    edge = _two_runtime_profile(factor)
    cloud = load_profile(str(REPO / "benchmarks" / "results" / "profile" / "local.json"))
    assert edge_runtimes(edge, "vgg16") == ["onnxruntime", "litert"] and edge_runtimes(edge, "mobilenet") == [
        "onnxruntime"
    ]
    m = build_model("vgg16")
    a = analyze(m, 32, "vgg16")
    shape = plan_shape(a, channel_groups(m, a), 6, [0.5] * 6)
    lm = FastestRuntime({r: build_latency_model(edge, cloud, None, r) for r in edge_runtimes(edge, "vgg16")})
    each = {r: lm.by_runtime[r].predict("vgg16", shape).edge_ms for r in lm.by_runtime}
    assert lm.runtime_for("vgg16", shape) == expect == min(each, key=each.get)
    assert lm.predict("vgg16", shape).edge_ms == pytest.approx(min(each.values()))
    assert (
        plan_runtime(lm, "vgg16", plan_shape(a, channel_groups(m, a), 0, [])) == "onnxruntime"
    )  # nothing on the device at cut 0
    # the run's link, for --report's latency-vs-bandwidth plot: the runtimes' models share it (it used to read as all
    # None)
    assert link_fields(lm) == link_fields(lm.by_runtime["onnxruntime"]) and link_fields(lm)["uplink_bytes_per_s"] > 0
    # a transfer priced two ways would make the runtime choice depend on the link: refused
    other = build_latency_model(edge, cloud, edge.link.model_copy(update={"rtt_ms": edge.link.rtt_ms + 5.0}), "litert")
    with pytest.raises(ValueError, match="different links"):
        FastestRuntime({"onnxruntime": lm.by_runtime["onnxruntime"], "litert": other})
    with pytest.raises(CpcdrlError, match="--model mobilenet --runtime litert"):
        build_latency_model(edge, cloud, None, "litert").predict(
            "mobilenet", plan_shape(a, channel_groups(m, a), 2, [1.0, 1.0])
        )


TINY = "tests.tinynets:two_convs:16"  # three layers: each LiteRT conversion takes about 2 s here


def _profile_locally(out, *runtimes: str) -> None:
    """TINY profiled on this host with each of ``runtimes``, one short pass (what is tested is the tables' form)."""
    args = ["profile", "--host", "local", "-m", TINY, *(a for r in runtimes for a in ("--runtime", r))]
    args += ["--grid", "1.0", "--repeats", "2", "--rounds", "1", "--warmup", "1", "-o", str(out), "--format", "json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def both_runtimes(tmp_path_factory) -> Profile:
    """Two --runtime options: every unit built for both and timed in the same batches, one table each."""
    need_litert()
    out = tmp_path_factory.mktemp("both") / "local.json"
    _profile_locally(out, "onnxruntime", "litert")
    return load_profile(out)


@pytest.mark.slow
def test_profile_times_litert_models_beside_the_onnx_tables(both_runtimes, tmp_path) -> None:
    """--runtime litert alone: its table only (the files the fixture converted are reused: build_jobs' cache)."""
    out = tmp_path / "local.json"
    _profile_locally(out, "litert")
    prof = load_profile(out)
    t = prof.tables[f"{TINY}@litert"].model_dump()
    assert t["runtime"] == "litert" and prof.host["litert"] and len(t["layers"]) == 3
    assert len(t["heads"]) == 3 and all(h["ms"] > 0 for h in t["heads"])
    assert TINY not in prof.tables  # ONNX Runtime's tables come from a run without --runtime


@pytest.mark.slow
def test_profile_times_both_runtimes_side_by_side(both_runtimes) -> None:
    ort, lite = both_runtimes.tables[TINY].model_dump(), both_runtimes.tables[f"{TINY}@litert"].model_dump()
    assert (
        (ort["runtime"], lite["runtime"]) == ("onnxruntime", "litert")
        and ort["timed_with"] == ["litert"]
        and lite["timed_with"] == ["onnxruntime"]
    )
    assert [h["cut"] for h in ort["heads"]] == [h["cut"] for h in lite["heads"]] == list(range(1, 4))
    assert all(h["ms"] > 0 for h in ort["heads"] + lite["heads"])
    # different files were timed: the two runtimes' whole-model times are not one number copied twice
    assert [h["round_means_ms"] for h in ort["heads"]] != [h["round_means_ms"] for h in lite["heads"]]
