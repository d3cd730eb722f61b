"""The testbed's link trace: read one line per bad row, replayed against the start, not between rows."""

from __future__ import annotations

import pytest

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.devices.linktrace import TracePoint, read_trace, replay


def test_a_trace_with_header_comments_and_units(tmp_path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("time_s,rate\n# a step trace\n0,50KB/s\n20, 2MB/s\n\n40,400000\n")
    assert read_trace(f) == [TracePoint(0.0, 50_000.0), TracePoint(20.0, 2e6), TracePoint(40.0, 400_000.0)]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0,50KB/s,20\n", "no delay stage"),
        ("10,50KB/s\n5,1MB/s\n", "in order"),
        ("soon,50KB/s\n", "is not a number"),
        ("0,fast\n", "cannot read bandwidth"),
        ("0\n", "expected time_s,rate"),
        ("0,0\n", "must be > 0"),
        ("time_s,rate\n", "no time_s,rate rows"),
    ],
)
def test_bad_rows_get_one_line(tmp_path, text: str, says: str) -> None:
    f = tmp_path / "t.csv"
    f.write_text(text)
    with pytest.raises(CpcdrlError, match=says):
        read_trace(f)
    with pytest.raises(CpcdrlError, match="cannot read trace"):
        read_trace(tmp_path / "missing.csv")


def test_replay_keeps_time_against_the_start() -> None:
    now = [100.0]
    slept: list[float] = []
    applied: list[tuple[float, float]] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    def apply(bps: float) -> None:
        applied.append((now[0] - 100.0, bps))
        now[0] += 0.5  # a slow tc call must not push the next change back

    points = [TracePoint(0.0, 50e3), TracePoint(2.0, 2e6), TracePoint(3.0, 50e3)]
    done = replay(points, apply, clock=lambda: now[0], sleep=sleep)
    assert applied == [(0.0, 50e3), (2.0, 2e6), (3.0, 50e3)]
    assert slept == [1.5, 0.5] and [d["applied_s"] for d in done] == [0.5, 2.5, 3.5]


def test_link_of_a_testbed_that_is_not_up_is_one_line() -> None:
    from typer.testing import CliRunner

    from cpcdrl_deploy.cli import app

    for args in (["--bandwidth", "1MB/s"], []):
        res = CliRunner().invoke(app, ["testbed", "link", "--name", "nosuchbed", *args])
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
