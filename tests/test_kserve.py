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
CHECK = Path(__file__).parent / "kserve" / "isvc_check.py"


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


def _check_manifest(path: Path) -> subprocess.CompletedProcess:
    assert KSERVE_PYTHON
    return subprocess.run([KSERVE_PYTHON, str(CHECK), str(path)], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(
    not KSERVE_PYTHON, reason="set CPCDRL_KSERVE_PYTHON to a Python with kserve and onnxruntime (.ci/run builds one)"
)
def test_export_kserve_writes_an_inference_service_that_kserve_models_accept(tmp_path) -> None:
    """``export --kserve``: the Triton repository and an InferenceService the kserve SDK's models accept; the check
    itself refuses a misspelt key, a wrong type and a missing required field."""
    from typer.testing import CliRunner

    from cpcdrl_deploy.cli import app
    from cpcdrl_deploy.deploy.kserve import STORAGE_PLACEHOLDER
    from tests.conftest import make_plan

    out = tmp_path / "e"
    plan = make_plan(tmp_path / "p.json", 3, 0.75)
    res = CliRunner().invoke(app, ["export", str(plan), "--out", str(out), "--kserve"])
    assert res.exit_code == 0, res.output
    text = (out / "inferenceservice.yaml").read_text()
    assert (out / "triton" / "tinyvgg_tail" / "config.pbtxt").exists()  # the repository the manifest serves
    assert f'storageUri: "{STORAGE_PLACEHOLDER}"' in text and "fill in its storageUri" in res.output
    assert 'name: "tinyvgg-tail"' in text and 'protocolVersion: "v2"' in text
    r = _check_manifest(out / "inferenceservice.yaml")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
    for old, new in [
        ("storageUri", "storageURI"),  # a key the schema does not have
        ("        limits:", "        limitz:"),
        ('protocolVersion: "v2"', "protocolVersion: 2"),  # a number where a string is due
        ('      modelFormat:\n        name: "onnx"\n', ""),  # the required model format left out
    ]:
        assert old in text, old
        bad = tmp_path / "bad.yaml"
        bad.write_text(text.replace(old, new))
        r = _check_manifest(bad)
        assert r.returncode == 1 and r.stdout.startswith("invalid:"), (old, r.stdout + r.stderr)


@pytest.mark.parametrize(
    "extra,says",
    [
        (["--storage-uri", "s3://b/t"], "--storage-uri goes with --kserve"),
        (["--kserve", "--storage-uri", "bucket/path"], "expected a URI"),
    ],
)
def test_export_kserve_options_are_checked_before_any_work(tmp_path, extra, says) -> None:
    from typer.testing import CliRunner

    from cpcdrl_deploy.cli import app

    res = CliRunner().invoke(app, ["export", str(tmp_path / "never-read.json"), "--out", str(tmp_path / "e"), *extra])
    assert res.exit_code != 0 and says in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "e").exists()


def test_inference_service_names_and_yaml() -> None:
    from cpcdrl_deploy.deploy.kserve import inference_service, service_name, to_yaml

    assert service_name("mobilenet_v3_small:96_tail") == "mobilenet-v3-small-96-tail"
    assert service_name("9net_tail") == "tail-9net-tail" and len(service_name("x" * 100)) == 63
    doc = inference_service("tinyvgg_tail", "pvc://models/triton")
    assert doc["spec"]["predictor"]["model"]["storageUri"] == "pvc://models/triton"
    assert to_yaml({"a": {"b": "x: y", "c": 1}}) == 'a:\n  b: "x: y"\n  c: 1'  # quoted: a colon stays a string
