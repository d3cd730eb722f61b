"""One CliRunner test per command, plus the one-line error contract."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cpcdrl_deploy.cli import DEMO_MODEL, app
from cpcdrl_deploy.models.zoo import build_model

from .conftest import CHECKPOINTS, DATASET_TGZ, need_shared

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_models_lists_the_zoo() -> None:
    res = run("models", "--format", "json")
    assert res.exit_code == 0
    names = [m["name"] for m in json.loads(res.stdout)]
    assert {"vgg16", "mobilenet", "resnet18", "mobilenet_v2", "tinyvgg"} <= set(names)
    assert "vgg16" in run("models").stdout


def test_analyze_json_figures() -> None:
    res = run("analyze", "mobilenet", "--format", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["total_macs"] == 46_354_432
    assert [p["index"] for p in d["points"]] == list(range(29))
    p0, p1 = d["points"][0], d["points"][1]
    assert p0["macs"] == 0 and p0["out_bytes"] == 12288
    assert p1["macs"] == 884_736 and p1["cum_macs"] == 884_736 and p1["out_shape"] == [32, 32, 32]
    table = run("analyze", "vgg16")
    assert "313,201,664" in table.stdout


def test_evaluate_builtin_demo() -> None:
    res = run("evaluate", "--limit", "200", "--ratios", "0.5", "--calib", "64", "--format", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["model"] == DEMO_MODEL and d["test_images"] == 200 and d["refit"] is True
    assert d["macs_after"] < 0.5 * d["macs_before"]
    assert 10.0 < d["accuracy"] <= 100.0


@pytest.mark.slow
def test_evaluate_reference_checkpoint_on_shared_data(cifar_dir) -> None:
    """The archive as a user passes it; unpacked once for the session (cifar_dir), as a second run finds it."""
    res = run(
        "evaluate",
        "mobilenet",
        "-c",
        str(need_shared(CHECKPOINTS["mobilenet"])),
        "--data",
        str(need_shared(DATASET_TGZ)),
        "--limit",
        "500",
        "--format",
        "json",
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["accuracy"] > 78.0


def test_train_writes_a_pytorch_cifar_checkpoint(tmp_path) -> None:
    out = tmp_path / "t.pth"
    res = run(
        "train",
        "tinyvgg",
        "--data",
        "builtin",
        "--epochs",
        "1",
        "--limit",
        "128",
        "--out",
        str(out),
        "--format",
        "json",
    )
    assert res.exit_code == 0, res.output
    ck = torch.load(out, map_location="cpu", weights_only=True)
    assert set(ck) == {"net", "acc", "epoch", "classes", "input_size", "mean", "std"} and ck["epoch"] == 1
    assert ck["classes"][0] == "airplane" and ck["input_size"] == 32
    assert set(ck["net"]) == set(build_model("tinyvgg").state_dict())
    assert json.loads(res.stdout)["acc"] == ck["acc"]


def test_errors_are_one_line_and_nonzero(tmp_path) -> None:
    cases = [
        ("analyze", "nosuchnet"),
        ("evaluate", "vgg16", "-c", str(tmp_path / "missing.pth")),
        ("evaluate", "--ratios", "0.5,0.2", "--cut", "3"),
        ("evaluate", "--ratios", "1.5"),
        ("evaluate", "--data", str(tmp_path / "nothing-here.txt")),
    ]
    (tmp_path / "nothing-here.txt").write_text("x")
    wrong = tmp_path / "wrong.pth"
    torch.save({"net": build_model("tinyvgg").state_dict()}, wrong)
    cases.append(("evaluate", "mobilenet", "-c", str(wrong)))
    for args in cases:
        res = run(*args)
        assert res.exit_code == 2, (args, res.output)
        assert res.stderr.strip().startswith("error: ") and len(res.stderr.strip().splitlines()) == 1, (
            args,
            res.stderr,
        )
        assert "Traceback" not in res.output
