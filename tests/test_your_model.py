"""A user's own model and data: a factory (residual, 3 classes) and an image folder of another size, end to end."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cpcdrl_deploy.cli import app

runner = CliRunner()

FACTORY = textwrap.dedent(
    """
    from torch import nn


    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

        def forward(self, x):
            return (self.bn2(self.conv2(self.bn1(self.conv1(x)).relu())) + x).relu()


    def small(num_classes=3):
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            Block(16), nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, num_classes),
        )


    def broken():
        raise ValueError("no weights here")
    """
)


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory):
    """A package with a factory, and an ImageFolder of 3 classes of 48x40 images (each class its own colour)."""
    root = tmp_path_factory.mktemp("user")
    (root / "mynets.py").write_text(FACTORY)
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("val", 8)):
        for c, colour in enumerate(((200, 40, 40), (40, 200, 40), (40, 40, 200))):
            folder = root / "flowers" / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                px = np.clip(rng.normal(colour, 40, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(folder / f"{i}.png")
    one = root / "one_class" / "only"
    one.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(one / "0.png")
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    sys.modules.pop("mynets", None)


def _ok(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (args, res.output)
    assert "Traceback" not in res.output
    return res.stdout


def _one_line_error(args: list[str], says: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (args, res.output)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], res.stderr


@pytest.mark.slow
def test_a_factory_model_on_a_folder_of_its_own(user_dir: Path, tmp_path: Path) -> None:
    data, model = str(user_dir / "flowers"), "mynets:small"
    a = json.loads(_ok(["analyze", model, "--input-size", "40", "--format", "json"]))
    assert a["input_shape"] == [3, 40, 40] and len(a["groups"]) >= 2  # the residual block ties two convs' outputs
    assert sum(p["cuttable"] for p in a["points"]) < len(a["points"])  # no cut inside the residual block
    ckpt = tmp_path / "small.pth"
    trained = json.loads(
        _ok(["train", model, "--data", data, "--input-size", "40", "--epochs", "3", "--out", str(ckpt), "--format",
             "json"])
    )  # fmt: skip
    assert trained["acc"] > 60.0  # three colours: far above chance (33 %) after three epochs
    plan = tmp_path / "plan.json"
    common = ["--data", data, "-c", str(ckpt), "--input-size", "40"]
    _ok(["optimize", model, *common, "--method", "greedy,edge-only", "--episodes", "2", "--val-size", "24",
         "--calib", "16", "--max-accuracy-loss", "20", "--no-cache", "--out", str(plan)])  # fmt: skip
    saved = json.loads(plan.read_text())
    assert saved["model"] == "mynets:small:40" and saved["feasible"]
    m = json.loads(_ok(["export", str(plan), "--out", str(tmp_path / "e"), "--format", "json"]))
    assert m["check"]["agreement_with_pytorch_pct"] == 100.0 and m["plan"]["model"] == "mynets:small:40"
    ev = json.loads(_ok(["evaluate", "--plan", str(plan), "--format", "json"]))
    assert ev["test_images"] == 24 and ev["accuracy"] == pytest.approx(saved["accuracy"]["test"])
    # bad input: one line each, exit 2
    _one_line_error(["analyze", "mynets:nothing_here"], "cannot import the model factory")
    _one_line_error(["analyze", "mynets:broken"], "failed: ValueError: no weights here")
    _one_line_error(["analyze", "tinyvgg", "--input-size", "64"], "cannot take a 64x64 input")
    _one_line_error(["train", model, "--data", str(user_dir / "one_class"), "--out", str(tmp_path / "x.pth")],
                    "a classifier needs at least 2")  # fmt: skip
    _one_line_error(["evaluate", model, "-c", str(ckpt), "--data", "builtin", "--input-size", "40"],
                    "outputs 3 classes")  # fmt: skip


@pytest.mark.slow
def test_a_residual_block_is_timed_whole(user_dir: Path, tmp_path: Path) -> None:
    """The profile times the block (two convs, batch norms, the add) whole at each grid keep, and the latency
    model prices the block from those timings, not from its convolutions alone."""
    from cpcdrl_deploy.measure.latency import SideTable, segment_ms
    from cpcdrl_deploy.measure.profile import load_profile

    out = tmp_path / "local.json"
    _ok(["profile", "--host", "local", "-m", "mynets:small:40", "--grid", "0.5,1.0", "--repeats", "2", "--rounds",
         "1", "--warmup", "1", "--classes", "5", "-o", str(out), "--format", "json"])  # fmt: skip
    table = load_profile(out).tables["mynets:small:40"]
    assert table.classes == 5 and table.layers[-1].out_channels == 5  # the checkpoints' count, not the factory's 3
    (seg,) = table.segments
    assert (seg.first, seg.last) == (2, 3) and [p.keep for p in seg.points] == [0.5, 1.0]
    assert seg.points[0].out_keep == [0.5, 0.5] and seg.points[1].in_keep == [1.0, 1.0]  # the block's input too
    side, n = SideTable(table, "ms"), len(table.layers)
    per_byte = table.run_overhead_per_io_byte.get("ms", 0.0)
    for p in seg.points:  # at a keep the block was timed at, its price is that timing less the run's cost
        ins, outs = [1.0] * n, [1.0] * n
        ins[1:3], outs[1:3] = p.in_keep, p.out_keep
        expect = max(0.0, p.ms - side.overhead_ms - per_byte * p.io_bytes)
        assert segment_ms(side, seg, ins, outs) == pytest.approx(expect, rel=1e-6)
    full = [1.0] * n
    alone = sum(side.alone(i, 1.0, 1.0) for i in range(1, n + 1))
    assert side.total(range(1, n + 1), full, full) == pytest.approx(
        side.overhead_ms + alone - side.alone(2, 1.0, 1.0) - side.alone(3, 1.0, 1.0) + segment_ms(side, seg, full, full)
    )


def test_validation_chunks_are_not_one_class_each(user_dir: Path, tmp_path: Path) -> None:
    # an ImageFolder lists its images class by class; the evaluator stops and screens plans on their first chunks,
    # so those must be a sample of every class, not the first class alone
    import mynets  # type: ignore[import-not-found]  # the fixture's package
    import torch

    from cpcdrl_deploy.search.optimize import OptimizeRequest, prepare

    ckpt = tmp_path / "small.pth"
    torch.save(mynets.small().state_dict(), ckpt)
    req = OptimizeRequest(
        "mynets:small",
        checkpoint=ckpt,
        data=str(user_dir / "flowers"),
        max_accuracy_loss=2.0,
        val_size=12,
        calib_size=8,
        cache=None,
    )
    s = prepare(req)
    y = s.evaluator.val_y.tolist()
    assert sorted(y) != y and len(set(y[:6])) > 1
