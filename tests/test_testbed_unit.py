"""Testbed pieces that need no root: argument parsing and the preflight's one-line refusals."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cpcdrl_deploy.cli import app
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.devices import testbed


def test_parse_bandwidth_units() -> None:
    assert testbed.parse_bandwidth("200KB/s") == 200_000
    assert testbed.parse_bandwidth("1.6Mbit") == pytest.approx(200_000)
    assert testbed.parse_bandwidth("5000") == 5000
    with pytest.raises(CpcdrlError):
        testbed.parse_bandwidth("fast")


def test_up_without_root_says_so_in_one_line(monkeypatch) -> None:
    monkeypatch.setattr(testbed.os, "geteuid", lambda: 1000)
    res = CliRunner().invoke(app, ["testbed", "up", "--name", "nobody"])
    assert res.exit_code == 2
    assert res.stderr.strip() == "error: the testbed needs root (network namespaces, tc, cgroups)"


def test_up_without_tc_says_so(monkeypatch) -> None:
    monkeypatch.setattr(testbed.os, "geteuid", lambda: 0)
    monkeypatch.setattr(testbed.shutil, "which", lambda tool: None if tool == "tc" else "/usr/sbin/" + tool)
    with pytest.raises(CpcdrlError, match="needs `tc`"):
        testbed.up("nobody")


def test_down_of_unknown_testbed(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CPCDRL_HOME", str(tmp_path))
    res = CliRunner().invoke(app, ["testbed", "down", "--name", "ghost"])
    assert res.exit_code == 2 and "no testbed named 'ghost'" in res.stderr
    assert testbed.status() == []


def test_read_pid_waits_out_a_half_written_pid_file(tmp_path) -> None:
    # sshd creates its pid file before writing the number (a CI run once read it empty)
    f = tmp_path / "sshd.pid"
    assert testbed._read_pid(f) == 0
    f.write_text("")
    assert testbed._read_pid(f) == 0
    f.write_text("4242\n")
    assert testbed._read_pid(f) == 4242


def test_cfs_period_is_the_shortest_the_kernel_accepts() -> None:
    # quota = share x period must be >= 1 ms; shorter periods spread the stalls finer
    assert testbed.cfs_period_us(0.25) == 4000
    assert testbed.cfs_period_us(2.0) == 1000
    for share in (0.01, 0.1, 0.3, 0.25, 0.5, 0.9, 1.0, 1.5):
        period = testbed.cfs_period_us(share)
        assert round(share * period) >= testbed.MIN_QUOTA_US
        assert period == testbed.MIN_QUOTA_US or round(share * (period - 1)) <= testbed.MIN_QUOTA_US


def test_host_work_stays_off_a_duty_cycled_device_cpu(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CPCDRL_HOME", str(tmp_path))
    monkeypatch.setattr(testbed.os, "cpu_count", lambda: 4)
    assert testbed.host_cpus() == {0, 1, 2, 3}  # no testbed: every CPU
    for name, pin, throttle in (("a", 3, "duty"), ("b", 2, "quota")):
        st = testbed.TestbedState(
            name=name,
            index=1,
            host_ip="",
            device_ip="",
            port=22,
            cpu=0.25,
            bandwidth_bytes_per_s=1.0,
            user="root",
            dir=str(testbed.state_dir(name)),
            python="",
            host_veth="",
            cgroup="",
            throttle=throttle,
            cpu_pin=pin,
        )
        testbed.state_dir(name).mkdir(parents=True)
        st.save()
    assert testbed.host_cpus() == {0, 1, 2}  # a quota testbed shares its CPU fairly: only the spinner's is held
    import os

    before = os.sched_getaffinity(0)
    monkeypatch.setattr(testbed, "host_cpus", lambda: {min(before)})
    with testbed.on_host_cpus():
        assert os.sched_getaffinity(0) == {min(before)}
    assert os.sched_getaffinity(0) == before


@pytest.mark.parametrize("bad", ["../..", "..", "a/b", "pi;rm -rf ~", "-x", "", "a" * 32, "pi name", "$(id)"])
def test_bad_testbed_names_are_refused_before_any_work(bad: str, tmp_path, monkeypatch) -> None:
    """A name becomes a state directory (removed recursively on a failed up) and shell words: refuse it first."""
    monkeypatch.setenv("CPCDRL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(testbed, "_preflight", lambda *a, **k: pytest.fail("preflight ran for a bad name"))
    with pytest.raises(CpcdrlError, match="bad testbed name"):
        testbed.up(bad)
    with pytest.raises(CpcdrlError, match="bad testbed name"):
        testbed.down(bad)
    with pytest.raises(CpcdrlError, match="bad testbed name"):
        testbed.state_dir(bad)
    assert testbed.load_state(bad) is None
    for args in (["testbed", "up", "--name", bad], ["testbed", "down", "--name", bad]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2 and "bad testbed name" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("good", ["pi", "pi2", "edge_1", "Pi-4", "a" * 31])
def test_good_testbed_names_pass(good: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CPCDRL_HOME", str(tmp_path))
    assert testbed.state_dir(good) == tmp_path / "testbed" / good
