"""Hardening of device access and data loading (issue: hostile input and faults): no root or network needed."""

from __future__ import annotations

import pickle
import shlex
import subprocess
import time
import uuid

import numpy as np
import pytest

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.devices.remote import LocalDevice, checked_tempdir, remote_command
from cpcdrl_deploy.models.data import load_images


def test_mktemp_answer_is_validated() -> None:
    assert checked_tempdir("/tmp/cpcdrl-Ab12cD\n", "pi") == "/tmp/cpcdrl-Ab12cD"
    # a login banner around it is skipped, not glued into the path
    assert checked_tempdir("Welcome to Raspberry Pi OS\n/tmp/cpcdrl-x9Y8z7\n", "pi") == "/tmp/cpcdrl-x9Y8z7"
    for bad in (
        "",
        "Welcome\n",
        "/tmp/cpcdrl-abc def\n",
        "/tmp/cpcdrl-abc;rm -rf ~\n",
        "/home/pi\n",
        "/tmp/cpcdrl-aaaaaa\n/tmp/cpcdrl-bbbbbb\n",
    ):
        with pytest.raises(CpcdrlError, match="mktemp answered"):
            checked_tempdir(bad, "pi")


def test_remote_command_is_one_quoted_word_under_timeout() -> None:
    cmd = "python3 '/tmp/a b'/x.py; echo $HOME"
    wrapped = remote_command(cmd, 9.5)
    words = shlex.split(wrapped)
    assert words[:5] == ["timeout", "-k", "5", "11", "sh"] and words[5:] == ["-c", cmd]


def test_local_timeout_kills_what_the_command_started() -> None:
    marker = f"sleep 31.{uuid.uuid4().int % 10**8}"  # a unique command line to look for afterwards
    dev = LocalDevice()
    t0 = time.monotonic()
    with pytest.raises(CpcdrlError, match="timed out"):
        # a grandchild that would outlive a killed shell
        dev.run(f"sh -c '{marker}' & wait", timeout=1.0)
    assert time.monotonic() - t0 < 10
    time.sleep(0.2)
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert left == [], f"process left running: {left}"


class _Boom:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['CPCDRL_PWNED'], 'w').write('x')",))


def _batches(root, payload) -> None:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    good = {"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [1, 2]}
    for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (base / n).write_bytes(pickle.dumps(payload if n == "data_batch_3" else good))


def test_torchvision_reader_refuses_code_in_pickles(tmp_path, monkeypatch) -> None:
    pwned = tmp_path / "pwned"
    monkeypatch.setenv("CPCDRL_PWNED", str(pwned))
    _batches(tmp_path / "evil", {"data": _Boom(), "labels": [0]})
    with pytest.raises(CpcdrlError, match=r"data_batch_3.*refusing to load builtins\.exec"):
        load_images(tmp_path / "evil")
    assert not pwned.exists()


def test_torchvision_reader_still_reads_real_batches(tmp_path) -> None:
    _batches(tmp_path / "ok", {"data": np.full((2, 3072), 7, dtype=np.uint8), "labels": [3, 4]})
    ds = load_images(tmp_path / "ok")
    assert len(ds.train) == 10 and len(ds.test) == 2
    assert int(ds.train.uint8([4])[0, 0, 0, 0]) == 7 and ds.train.labels[4] == 3


def test_echo_test_that_times_out_names_the_time_out() -> None:
    """A timeout has an empty message: the error used to end on a bare colon."""

    import pytest

    from cpcdrl_deploy.core.errors import CpcdrlError
    from cpcdrl_deploy.devices.remote import SSHDevice

    class Silent:  # a channel whose device never echoes
        timeouts: list[float] = []

        def settimeout(self, t: float) -> None:
            self.timeouts.append(t)

        def exec_command(self, cmd: str) -> None:
            pass

        def sendall(self, b: bytes) -> None:
            pass

        def recv(self, n: int) -> bytes:
            raise TimeoutError()  # what paramiko raises (socket.timeout is its alias)

        def close(self) -> None:
            pass

    class Transport:
        def open_session(self, timeout: float) -> Silent:
            return Silent()

    class Client:
        def get_transport(self) -> Transport:
            return Transport()

    dev = SSHDevice.__new__(SSHDevice)  # no connection: only the echo test runs
    dev.client, dev.name = Client(), "pis"
    with pytest.raises(CpcdrlError, match=r"^echo test to pis failed: (timeout|TimeoutError)"):
        dev.echo_rtt_ms()
    assert Silent.timeouts[0] >= 60  # the first byte waits for cat to start on a slow device
