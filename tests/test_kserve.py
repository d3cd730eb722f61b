"""The edge runner against KServe's own Python model server serving the exported tail (not our server).

KServe pins its own stack, so it lives in an environment of its own: CI
builds it (.ci/run) and points $CPCDRL_KSERVE_PYTHON at its interpreter.
Without that variable the test says so and skips; CI fails if it would skip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from cpcdrl_deploy.serving.manifest import ort_session

from .test_edge_runner import _run, exported  # noqa: F401 - the module fixture, shared

KSERVE_PYTHON = os.environ.get("CPCDRL_KSERVE_PYTHON")
MODEL = Path(__file__).parent / "kserve" / "tail_model.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not KSERVE_PYTHON, reason="set CPCDRL_KSERVE_PYTHON to a Python with kserve and onnxruntime (.ci/run builds one)"
)
def test_edge_runner_against_kserve_python_server(exported, tmp_path) -> None:  # noqa: F811
    e3, _, x = exported
    port = _free_port()
    srv = subprocess.Popen(
        [KSERVE_PYTHON, str(MODEL), str(e3 / "tail.onnx"), "tinyvgg_tail", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:  # KServe takes a few seconds to import and start
            try:
                with urllib.request.urlopen(f"{url}/v2/models/tinyvgg_tail/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert srv.poll() is None and time.time() < deadline, (
                srv.stdout.read() if srv.poll() is not None else b""
            ).decode()[-2000:]
            time.sleep(0.5)
        rc, log, rep = _run(
            tmp_path, "--inputs", str(x), "--head", str(e3 / "head.onnx"), "--url", url, "--model", "tinyvgg_tail"
        )
    finally:
        srv.terminate()
        try:
            srv.wait(15)
        except subprocess.TimeoutExpired:
            srv.kill()
    assert rc == 0, log
    full = ort_session(e3 / "full.onnx").run(None, {"input": np.load(x)})[0].argmax(1)
    assert rep["answered"] == len(full) and rep["errors"] == 0
    assert [
        r["prediction"] for r in rep["records"]
    ] == full.tolist()  # the split through KServe = the whole pruned model
    # KServe's metadata lists no inputs by default: the runner checked the first reply instead, and says so
    assert (
        "checked the first reply instead" in rep["metadata_check"]
        or rep["metadata_check"] == "head outputs match the server's inputs"
    ), rep["metadata_check"]
