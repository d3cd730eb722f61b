"""End-to-end optimize on MobileNet with a handful of episodes, seeds, and bad inputs."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cpcdrl_deploy.cli import DEMO_MODEL, app
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.search.methods import SearchConfig
from cpcdrl_deploy.search.optimize import OptimizeRequest, optimize
from cpcdrl_deploy.search.plan import load_plan

from .conftest import CHECKPOINTS, need_shared

runner = CliRunner()


def _req(cifar_dir, **kw) -> OptimizeRequest:
    base = dict(
        model="mobilenet",
        checkpoint=need_shared(CHECKPOINTS["mobilenet"]),
        data=str(cifar_dir),
        max_accuracy_loss=3.0,
        methods=("cpcdrl", "neurosurgeon", "greedy", "edge-only", "cloud-only", "random"),
        val_size=200,
        calib_size=64,
        test_limit=200,
        search=SearchConfig(episodes=6, warmup=3, seed=0),
    )
    base.update(kw)
    return OptimizeRequest(**base)


TICKS: list[tuple[str, int, int | None]] = []  # what the progress bars of the module's main run were told


@pytest.fixture(scope="module")
def result(cifar_dir):
    return optimize(_req(cifar_dir), tick=lambda *a: TICKS.append(a)).to_data()


def test_progress_reaches_each_methods_total(result) -> None:
    plans = {p["method"]: p for p in result["plans"]}
    for method in plans:
        ticks = [(done, total) for task, done, total in TICKS if task == method]
        assert ticks, f"no progress for {method}"
        dones = [d for d, _ in ticks]
        assert dones == sorted(dones) and ticks[-1][0] == ticks[-1][1], f"{method}: {ticks}"
    assert [t for t in TICKS if t[0] == "cpcdrl"][0][2] == 6  # the whole budget of proposals, known up front
    assert [t for t in TICKS if t[0] == "random"][0][2] == plans["cpcdrl"]["evaluations"]
    assert TICKS[-1] == ("plans on the test images", len(plans), len(plans))


def test_end_to_end_mobilenet(result) -> None:
    plans = {p["method"]: p for p in result["plans"]}
    assert set(plans) == {"cpcdrl", "neurosurgeon", "greedy", "edge-only", "cloud-only", "random"}
    ns = plans["neurosurgeon"]
    # under the paper profile the best unpruned split of CIFAR MobileNet is cloud-only: 12,288 B / 200 KB/s + 46.35 MMAC
    # / 5 GMAC/s
    assert ns["cut"] == 0 and ns["latency_ms"]["total_ms"] == pytest.approx(61.44 + 9.2708864)
    assert plans["edge-only"]["latency_ms"]["total_ms"] == pytest.approx(92.708864)
    for p in result["plans"]:
        if p["feasible"]:
            assert p["accuracy"]["validation"] >= result["a0_validation"]
            assert p["latency_ms"]["total_ms"] == pytest.approx(
                p["latency_ms"]["edge_ms"] + p["latency_ms"]["transfer_ms"] + p["latency_ms"]["cloud_ms"]
            )
            assert len(p["ratios"]) == p["cut"] and len(p["channels"]) == p["n_layers"] == 28
            assert p["accuracy"]["test"] is not None
    # one reward per proposal: uniform start 1, RL 4, refinement at most 1 (6 episodes in all)
    assert len(result["rewards"]["cpcdrl"]) == plans["cpcdrl"]["episodes"] and 5 <= plans["cpcdrl"]["episodes"] <= 6
    assert plans["random"]["evaluations"] == plans["cpcdrl"]["evaluations"]
    assert plans["cpcdrl"]["feasible"]


def test_same_seed_same_plan(cifar_dir, result) -> None:
    again = optimize(_req(cifar_dir, methods=("cpcdrl",))).to_data()
    a = next(p for p in result["plans"] if p["method"] == "cpcdrl")
    b = again["plans"][0]
    assert (a["cut"], a["ratios"], a["accuracy"]["validation"]) == (b["cut"], b["ratios"], b["accuracy"]["validation"])
    assert result["rewards"]["cpcdrl"] == again["rewards"]["cpcdrl"]


def test_impossible_a0_is_refused(cifar_dir) -> None:
    with pytest.raises(CpcdrlError, match="above what even the unpruned model"):
        optimize(_req(cifar_dir, max_accuracy_loss=None, accuracy=99.9))


def test_cli_optimize_writes_plan_and_report(tmp_path) -> None:
    plan = tmp_path / "plan.json"
    rep = tmp_path / "rep"
    res = runner.invoke(
        app,
        [
            "optimize",
            "--max-accuracy-loss",
            "5",
            "--episodes",
            "3",
            "--warmup",
            "2",
            "--val-size",
            "100",
            "--calib",
            "32",
            "--limit",
            "100",
            "--method",
            "cpcdrl,neurosurgeon",
            "--out",
            str(plan),
            "--report",
            str(rep),
            "--format",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert [p["method"] for p in d["plans"]] == ["cpcdrl", "neurosurgeon"]
    saved = load_plan(plan)
    assert (
        saved.model == DEMO_MODEL
        and saved.method == "cpcdrl"
        and len(saved.checkpoint_sha256 or "") == 64
        and saved.cut == len(saved.ratios)
    )
    assert (
        (rep / "rewards.png").stat().st_size > 1000
        and (rep / "plans.png").exists()
        and "| cpcdrl |" in (rep / "table.md").read_text()
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["--accuracy", "99.9"], "above what even the unpruned"),
        (["--max-accuracy-loss", "1", "--edge", "nonexistent"], "unknown profile"),
        (["--max-accuracy-loss", "1", "--episodes", "0"], "episodes"),
        (["--max-accuracy-loss", "1", "--method", "magic"], "unknown method"),
        (["--accuracy", "80", "--max-accuracy-loss", "1"], "exactly one of"),
        (["--max-accuracy-loss", "1", "--device", "tpu"], "expected cpu, cuda"),
        *([] if torch.cuda.is_available() else [(["--max-accuracy-loss", "1", "--device", "cuda"], "no CUDA device")]),
    ],
)
def test_cli_optimize_bad_inputs(args, message) -> None:
    res = runner.invoke(app, ["optimize", "--val-size", "50", "--limit", "50", "--calib", "16", *args])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in res.output


@pytest.mark.slow
def test_readme_main_job_lands_on_a_split_and_says_why() -> None:
    """The README's first command (the built-in default) must show a split: head on the edge, tail on the server."""
    import re
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    setup = re.search(r"```bash\n(.*?)\n", readme).group(1)
    argv = shlex.split(setup.split("&&")[-1].strip())
    assert argv[:2] == ["cpcdrl", "optimize"], setup
    res = runner.invoke(app, [*argv[1:], "--format", "json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    cp = next(p for p in d["plans"] if p["method"] == "cpcdrl")
    assert d["model"] == DEMO_MODEL and 0 < cp["cut"] < cp["n_layers"] and cp["accuracy"]["meets_a0_on_test"]
    assert cp["latency_ms"]["edge_ms"] > 0 and cp["latency_ms"]["cloud_ms"] > 0 and cp["cut_bytes"] < d["input_bytes"]
    # where the latencies come from, said in the plan itself
    assert cp["latency_model"].startswith("the analytic MAC model")
