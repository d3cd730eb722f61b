"""The quota testbed, each test with its own: it cannot be up beside the default (duty-cycled) one in
test_device_testbed.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.devices import testbed
from tests.test_device_testbed import _busy_loop_share, _can_run

pytestmark = pytest.mark.device  # a testbed of its own: root, sshd, iproute2


def test_quota_testbed_gives_a_busy_loop_its_share(tmp_path) -> None:
    # --throttle quota: a CFS quota of 1 ms per 4 ms
    why = _can_run()
    if why:
        pytest.skip(why)
    home = Path(os.environ.get("CPCDRL_HOME", Path.home() / ".cpcdrl"))
    st = testbed.up(
        "cpcdrlquota",
        cpu=0.25,
        throttle="quota",
        python_venv=Path(os.environ.get("CPCDRL_DEVICE_VENV", home / "venv")),
        log=print,
    )
    try:
        assert st.cfs_period_us == 4000 and (Path(st.cgroup) / "cpu.cfs_quota_us").read_text().strip() == "1000"
        assert (
            not st.throttle_pid
            and next(r for r in testbed.status() if r["name"] == "cpcdrlquota")["throttle"] == "quota"
        )
        assert 0.18 < _busy_loop_share("cpcdrlquota", st.python) < 0.32
        with pytest.raises(CpcdrlError, match="to itself"):
            testbed.up("cpcdrlduty2", cpu=0.25, throttle="duty", python_venv=Path(st.python).parents[1], log=print)
    finally:
        testbed.down("cpcdrlquota")
    assert not Path(st.cgroup).exists()
