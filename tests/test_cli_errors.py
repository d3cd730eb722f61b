"""Bad output paths are refused before any work: one line, exit 2, no traceback, nothing written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cpcdrl_deploy.cli import app

runner = CliRunner()


@pytest.fixture
def blocker(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("not a directory")
    return f


def _cases(blocker, tmp_path) -> list[list[str]]:
    plan = tmp_path / "plan.json"  # never read: the output check comes first
    return [
        ["optimize", "--out", str(blocker / "plan.json")],
        ["optimize", "--report", str(blocker / "report")],
        ["optimize", "--report", str(blocker)],
        ["optimize", "--out", str(tmp_path)],  # a directory where a file is wanted
        ["train", "tinyvgg", "--out", str(blocker / "x.pth")],
        ["export", str(plan), "--out", str(blocker)],
        ["export", str(plan), "--out", str(tmp_path / "ok"), "--triton", str(blocker / "repo")],
        ["deploy", str(plan), "--out", str(blocker / "d")],
        ["profile", "--host", "local", "--out", str(blocker / "p.json")],
    ]


@pytest.mark.parametrize("i", range(9))
def test_bad_output_path_is_refused_first(i, blocker, tmp_path) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    args = _cases(blocker, tmp_path)[i]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (args, res.output)
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output
    assert "--out" in lines[0] or "--report" in lines[0] or "--triton" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing half-written, no probe file left


def test_version() -> None:
    from cpcdrl_deploy import __version__

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"cpcdrl {__version__}"


_EDITS = [
    ("cut", 99, "'cut' must be in 0..7"),
    ("cut", "3", "'cut' input should be a valid integer"),
    ("ratios", [0.5, 0.5], "'ratios' must be 3 keep ratios"),
    ("ratios", [0.5, 1.5, 0.5], "'ratios' must be 3 keep ratios"),
    ("channels", [16, 16], "'channels' must be 7 positive integers"),
    ("model", "resnet9000", "'model' names no zoo model"),
    ("checkpoint_sha256", "xyz", "'checkpoint_sha256' must be 64"),
    ("data", "builtin", "'data' input should be a valid dictionary"),
    ("seed", 1.5, "'seed' input should be a valid integer"),
    ("latency_ms", {"total_ms": -1}, "'latency_ms' must map"),
]


@pytest.mark.parametrize("field,value,msg", _EDITS)
def test_hand_edited_plan_is_refused_in_one_line(field, value, msg, tmp_path) -> None:
    import json

    from .conftest import make_plan

    path = make_plan(tmp_path / "plan.json", 3, 0.5)
    d = json.loads(path.read_text())
    d[field] = value
    path.write_text(json.dumps(d))
    for args in (
        ["export", str(path), "--out", str(tmp_path / "exp")],
        ["deploy", str(path), "--out", str(tmp_path / "dep")],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert msg in res.stderr and "Traceback" not in res.output and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "exp").exists() and not (tmp_path / "dep").exists()


def test_plan_missing_a_field_is_refused(tmp_path) -> None:
    import json

    from .conftest import make_plan

    path = make_plan(tmp_path / "plan.json", 3, 0.5)
    d = json.loads(path.read_text())
    del d["channels"]
    path.write_text(json.dumps(d))
    res = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "exp")])
    assert res.exit_code == 2 and "'channels' is missing" in res.stderr


def test_ctrl_c_during_optimize_keeps_the_best_plan_so_far(tmp_path, monkeypatch) -> None:
    import json

    from cpcdrl_deploy.search.evaluator import PlanEvaluator

    real = PlanEvaluator.evaluate
    calls = {"n": 0}

    def evaluate(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 14:  # mid-search, after the uniform start found feasible plans
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(PlanEvaluator, "evaluate", evaluate)
    out = tmp_path / "plan.json"
    res = runner.invoke(
        app,
        [
            "optimize",
            "--max-accuracy-loss",
            "3",
            "--episodes",
            "30",
            "--method",
            "cpcdrl,greedy",
            "--out",
            str(out),
            "--no-cache",
        ],
    )
    assert res.exit_code == 130, res.output
    assert "interrupted" in res.stderr and "best plan when interrupted" in res.stderr and "Traceback" not in res.output
    plan = json.loads(out.read_text())
    assert plan["method"] == "cpcdrl" and plan["feasible"] and plan["accuracy"]["test"] is None
    assert plan["accuracy"]["validation"] >= plan["accuracy"]["a0_validation"]


def test_messages_a_newcomer_can_act_on(tmp_path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    nonempty = tmp_path / "junk"
    nonempty.mkdir()
    (nonempty / "x").write_text("x")
    from .conftest import make_plan

    plan = make_plan(tmp_path / "p.json", 3, 0.75)
    cases = [
        (["evaluate", "mobilenet", "-c", str(text), "--limit", "5"], "is not a PyTorch checkpoint"),
        (["optimize", "nosuchmodel"], "unknown model 'nosuchmodel': give a zoo name (vgg16"),
        (["evaluate", "tinyvgg", "--data", str(tmp_path / "typo"), "--limit", "5"], "no such file or directory"),
        (["evaluate", "tinyvgg", "--data", str(nonempty), "--limit", "5"], "no images here (an ImageFolder"),
        (
            ["deploy", str(plan), "--edge", "nosuchhost.invalid", "--out", str(tmp_path / "d")],
            "cannot reach nosuchhost.invalid",
        ),
        (["evaluate", "--plan", str(tmp_path / "nope.json")], "nope.json"),
        (["evaluate", "--plan", str(text)], "notes.txt"),
        (["evaluate", "--plan", str(plan), "--cut", "2"], "--plan brings its own cut and ratios"),
    ]
    for args, msg in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and msg in res.stderr and "Traceback" not in res.output, (args, res.output)
    assert (
        not (tmp_path / "typo").exists() and not (tmp_path / "d").exists()
    )  # no download directory, no half-filled output


@pytest.mark.parametrize(
    "args, words",
    [
        (["optimize", "--bogus"], "No such option: --bogus"),
        (["optimize", "--episodes", "abc"], "'--episodes'"),
        (["nosuch"], "No such command 'nosuch'"),
    ],
)
def test_usage_mistakes_are_one_error_line(args, words, monkeypatch, capsys) -> None:
    """Typer boxes usage errors over several lines; the entry point prints them as every other bad input."""
    import cli

    monkeypatch.setattr("sys.argv", ["cpcdrl", *args])
    assert cli.main() == 2
    out, err = capsys.readouterr()
    lines = [x for x in err.splitlines() if x.strip()]
    assert out == "" and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]
    assert lines[0].endswith("--help'")  # where to look next


def test_bare_group_still_prints_its_help(monkeypatch, capsys) -> None:
    import cli

    monkeypatch.setattr("sys.argv", ["cpcdrl", "cache"])
    assert cli.main() == 2
    assert "info" in capsys.readouterr().out
