"""The cut tensor's wire: bytes priced, loss simulated as ONNX Runtime applies it, and plans that carry it to export."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from cpcdrl_deploy.compress.pruning import channel_groups, plan_shape
from cpcdrl_deploy.compress.transfer import WireModel, through_wire, wire_bytes
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.fileio import atomic_write_json
from cpcdrl_deploy.deploy.export import _compress_output, _decompress_input, _identity_onnx, export_plan
from cpcdrl_deploy.models.data import load_images, subset
from cpcdrl_deploy.models.evaluate import accuracy_on
from cpcdrl_deploy.models.graph import analyze
from cpcdrl_deploy.models.zoo import load_model, resolve_checkpoint
from cpcdrl_deploy.search.methods import SearchConfig
from cpcdrl_deploy.search.optimize import OptimizeRequest, optimize, uniform_plan
from cpcdrl_deploy.serving.manifest import ort_session, run_split


def test_wire_bytes() -> None:
    assert wire_bytes(4096, "fp32") == 4096
    assert wire_bytes(4096, "fp16") == 2048
    assert wire_bytes(4096, "int8") == 1024 + 5  # the tensor, a float32 scale and a uint8 zero point
    with pytest.raises(CpcdrlError, match="--transfer must be one of"):
        wire_bytes(4096, "int4")


def test_plan_shape_prices_the_wire_at_every_cut_that_sends() -> None:
    net = load_model("tinyvgg", resolve_checkpoint("tinyvgg", None, required=True))
    a = analyze(net, 32, "tinyvgg")
    g = channel_groups(net, a)
    n = a.n_layers
    for cut in (0, 3):
        fp32 = plan_shape(a, g, cut, [0.5] * cut).cut_bytes
        assert plan_shape(a, g, cut, [0.5] * cut, transfer="int8").cut_bytes == fp32 // 4 + 5
        assert plan_shape(a, g, cut, [0.5] * cut, transfer="fp16").cut_bytes == fp32 // 2
    assert plan_shape(a, g, 0, [], transfer="int8").cut_bytes == 3 * 32 * 32 + 5  # the image, one byte per value
    assert (
        plan_shape(a, g, n, [1.0] * n, transfer="int8").cut_bytes == plan_shape(a, g, n, [1.0] * n).cut_bytes
    )  # nothing sent at N


@pytest.mark.parametrize("transfer", ["fp16", "int8"])
def test_simulated_wire_equals_onnx_runtimes(transfer: str) -> None:
    """What the optimiser scores is what the exported graphs compute: encoder + decoder in ORT vs through_wire."""
    shape = (8, 4, 4)
    head = ort_session(_compress_output(onnx.load_from_string(_identity_onnx(shape)), transfer).SerializeToString())
    tail_in = onnx.load_from_string(_identity_onnx(shape))
    tail_in.graph.input[0].name = "cut"
    tail_in.graph.node[0].input[0] = "cut"
    tail_in.graph.output[0].name = "logits"
    tail_in.graph.node[0].output[0] = "logits"
    tail = ort_session(_decompress_input(tail_in, transfer).SerializeToString())
    rng = np.random.default_rng(0)
    for x in (
        rng.normal(size=(5, *shape)),
        np.maximum(rng.normal(size=(5, *shape)), 0) * 7.0,
        np.full((1, *shape), 0.3),
    ):
        x = x.astype(np.float32)
        ort = np.concatenate([run_split(head, tail, x[i : i + 1]) for i in range(len(x))])  # one request per sample
        sim = through_wire(torch.from_numpy(x), transfer).numpy()
        assert np.abs(ort - sim).max() <= 1e-6 * max(1.0, float(np.abs(x).max()))


def test_optimize_prices_and_scores_the_wire_and_export_follows_it(tmp_path) -> None:
    ckpt = resolve_checkpoint("tinyvgg", None, required=True)
    req = OptimizeRequest(
        model="tinyvgg",
        checkpoint=ckpt,
        data="builtin",
        methods=("neurosurgeon", "cloud-only"),
        max_accuracy_loss=5.0,
        val_size=200,
        calib_size=64,
        test_limit=100,
        search=SearchConfig(episodes=4, seed=0),
        cache=None,
        transfer="int8",
    )
    res = optimize(req).to_data()
    cloud = next(p for p in res["plans"] if p["method"] == "cloud-only")
    assert cloud["transfer"] == "int8" and cloud["cut"] == 0 and cloud["cut_bytes"] == 3 * 32 * 32 + 5
    # the image through the int8 wire is scored, not assumed lossless: it equals the simulated model's accuracy
    net = load_model("tinyvgg", ckpt)
    ds = load_images("builtin")
    idx = subset(len(ds.test), 100, 0)
    assert cloud["accuracy"]["test"] == pytest.approx(accuracy_on(WireModel(net, 0, "int8"), ds.test, idx))

    # export takes the plan's wire by default; at cut 0 the head is the encoder alone
    plan = uniform_plan("tinyvgg", 0, 1.0).to_data()
    plan["transfer"] = "int8"
    p = atomic_write_json(tmp_path / "p0.json", plan)
    m = export_plan(p, tmp_path / "e0", check_images=32).to_data()
    assert m["transfer"] == "int8" and set(m["files"]) == {"head", "tail", "full"}
    assert m["files"]["head"]["outputs"][0]["datatype"] == "UINT8"
    assert m["check"]["agreement_with_pytorch_pct"] >= 95.0
    assert (
        export_plan(p, tmp_path / "e1", transfer="fp32", check_images=16).transfer == "fp32"
    )  # an explicit --transfer wins


def test_a_plan_with_an_unknown_wire_is_refused(tmp_path) -> None:
    plan = uniform_plan("tinyvgg", 3, 0.75).to_data()
    plan["transfer"] = "int4"
    p = tmp_path / "p.json"
    p.write_text(json.dumps(plan))
    with pytest.raises(CpcdrlError, match="field 'transfer'"):
        export_plan(p, tmp_path / "e")
