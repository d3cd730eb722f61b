"""The edge runner: self-contained, time-outs, local fallback, a server that dies mid-run, a head that does not fit."""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cpcdrl_deploy.deploy.export import export_plan
from cpcdrl_deploy.measure.profiler import PROFILER, probe_model
from cpcdrl_deploy.models.data import load_images
from cpcdrl_deploy.serving.manifest import ort_session
from cpcdrl_deploy.serving.session import RUNNER, RUNNER_FILES, CloudServer
from tests.conftest import make_plan


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("runner")
    export_plan(make_plan(d / "p3.json", 3, 0.75), d / "e3", check_images=16)
    export_plan(make_plan(d / "p4.json", 4, 0.75), d / "e4", check_images=16)
    x, _ = load_images("builtin").test.tensors(np.arange(40))
    np.save(d / "x.npy", x.numpy())
    return d / "e3", d / "e4", d / "x.npy"


def _run(tmp: Path, *args: str, token: str | None = None, timeout: float = 120) -> tuple[int, str, dict | None]:
    out = tmp / "report.json"
    env = dict(os.environ, CPCDRL_TOKEN=token or "")
    p = subprocess.run(
        [sys.executable, str(RUNNER), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=tmp,
    )
    return p.returncode, p.stdout + p.stderr, json.loads(out.read_text()) if out.exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return roots - set(sys.stdlib_module_names) - {"__future__"}


def test_runner_imports_only_numpy_and_the_runtimes() -> None:
    # timer: the profiler's device-side file, copied beside the runner for --probe; datatypes: the datatype
    # table, uploaded with the runner (cpcdrl_deploy only where the package is installed, on the host);
    # each runtime is imported only when a model file of its kind is loaded (tflite_runtime: the old LiteRT package)
    runtimes = {"onnxruntime", "ai_edge_litert", "tflite_runtime"}
    assert _imports(RUNNER) - {"cpcdrl_deploy"} == {"numpy", "timer"} | runtimes
    # on the device the table comes from datatypes.py beside the runner (importlib), which needs numpy only
    assert all(f'import_module("{m}")' in RUNNER.read_text() for m in ("datatypes", "adapt", "prepare"))
    assert {f.name for f in RUNNER_FILES} == {"runner.py", "datatypes.py", "adapt.py", "prepare.py"}
    assert _imports(RUNNER_FILES[1]) == {"numpy"}
    assert _imports(RUNNER_FILES[2]) == set()  # the link estimate: the standard library only
    assert _imports(RUNNER_FILES[3]) == {"numpy"}  # the frames' preparation
    assert _imports(PROFILER) == {"numpy"} | runtimes


def test_frames_are_prepared_on_the_device_as_on_the_host(exported, tmp_path) -> None:
    """uint8 frames and the manifest's preprocessing give the answers of the host-prepared images; frames without
    the preprocessing are one line and exit 2, nothing written."""
    _, e4, x = exported
    frames = load_images("builtin").test.uint8(np.arange(40))
    np.save(tmp_path / "frames.npy", frames)
    prep = json.loads((e4 / "manifest.json").read_text())["preprocess"]
    rc, out, want = _run(tmp_path, "--inputs", str(x), "--head", str(e4 / "head.onnx"))
    assert rc == 0, out
    (tmp_path / "prep.json").write_text(json.dumps(prep))
    rc, out, got = _run(
        tmp_path, "--inputs", "frames.npy", "--head", str(e4 / "head.onnx"), "--preprocess", "prep.json"
    )
    assert rc == 0, out
    assert got["inputs"]["given"] == "frames" and got["inputs"]["prepare_ms_per_frame"] > 0
    assert [r["prediction"] for r in got["records"]] == [r["prediction"] for r in want["records"]]
    (tmp_path / "report.json").unlink()
    rc, out, none = _run(tmp_path, "--inputs", "frames.npy", "--head", str(e4 / "head.onnx"))
    assert (
        rc == 2
        and none is None
        and out.strip().splitlines()
        == ["error: ValueError: uint8 frames need --preprocess (the export manifest's preprocess)"]
    )


def test_speed_probe_between_requests(exported, tmp_path) -> None:
    """--probe times the reference model before, between and after the requests, as the profiler does; answers
    unchanged."""
    _, e4, x = exported
    for f in (*RUNNER_FILES, PROFILER):  # on the device the files lie side by side
        shutil.copy(f, tmp_path / f.name)
    data, shape, _ = probe_model("tinyvgg")
    (tmp_path / "probe.onnx.gz").write_bytes(data)
    p = subprocess.run(
        [
            sys.executable,
            str(tmp_path / RUNNER.name),
            "--inputs",
            str(x),
            "--head",
            str(e4 / "full.onnx"),
            "--probe",
            str(tmp_path / "probe.onnx.gz"),
            "--probe-shape",
            ",".join(map(str, shape)),
            "--probe-every",
            "16",
            "--probe-repeats",
            "5",
            "--probe-min-ms",
            "20",
            "--out",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    blocks = rep["probe"]["blocks"]
    assert [b["before_request"] for b in blocks] == [0, 16, 32, 40]
    assert all(b["repeats"] >= 5 and b["mean_ms"] > 0 and b["repeats"] * b["mean_ms"] >= 20.0 for b in blocks)
    full = ort_session(e4 / "full.onnx").run(None, {"input": np.load(x)})[0].argmax(1)
    assert [r["prediction"] for r in rep["records"]] == full.tolist()


def test_end_to_end_against_the_server(exported, tmp_path) -> None:
    e3, _, x = exported
    srv = CloudServer(e3, "127.0.0.1", "tok")
    try:
        rc, log, rep = _run(
            tmp_path,
            "--inputs",
            str(x),
            "--head",
            str(e3 / "head.onnx"),
            "--url",
            srv.url,
            "--model",
            "tinyvgg_tail",
            token="tok",
        )
    finally:
        srv.stop()
    assert rc == 0, log
    full = ort_session(e3 / "full.onnx").run(None, {"input": np.load(x)})[0].argmax(1)
    assert [r["prediction"] for r in rep["records"]] == full.tolist()
    r0 = rep["records"][0]
    assert r0["e2e_ms"] >= r0["edge_ms"] + r0["server_compute_ms"] and r0["bytes_sent"] > 24 * 16 * 16 * 4


def test_server_down_at_start(exported, tmp_path) -> None:
    e3, _, x = exported
    url = f"http://127.0.0.1:{_free_port()}"
    t0 = time.perf_counter()
    args = ["--inputs", str(x), "--head", str(e3 / "head.onnx"), "--url", url, "--model", "tinyvgg_tail"]
    rc, log, rep = _run(tmp_path, *args, "--timeout", "2")
    assert rc == 1 and rep["aborted"] and "3 consecutive" in rep["aborted"] and rep["answered"] == 0
    assert time.perf_counter() - t0 < 60
    rc, log, rep = _run(tmp_path, *args, "--timeout", "2", "--fallback", "local", "--full", str(e3 / "full.onnx"))
    assert rc == 0 and rep["answered"] == 40 and rep["fallbacks"] == 40
    full = ort_session(e3 / "full.onnx").run(None, {"input": np.load(x)})[0].argmax(1)
    assert [r["prediction"] for r in rep["records"]] == full.tolist()


@pytest.mark.slow
def test_server_killed_mid_run(exported, tmp_path) -> None:
    e3, _, x = exported
    big = tmp_path / "many.npy"
    np.save(big, np.repeat(np.load(x), 100, axis=0))  # 4,000 requests: far longer than the kill delay
    srv = CloudServer(e3, "127.0.0.1", "")
    out = tmp_path / "report.json"
    p = subprocess.Popen(
        [
            sys.executable,
            str(RUNNER),
            "--inputs",
            str(big),
            "--head",
            str(e3 / "head.onnx"),
            "--url",
            srv.url,
            "--model",
            "tinyvgg_tail",
            "--timeout",
            "2",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(3.0)
    srv.proc.kill()
    t0 = time.perf_counter()
    log, _ = p.communicate(timeout=60)
    assert time.perf_counter() - t0 < 30, "no hang after the server died"
    rep = json.loads(out.read_text())
    assert p.returncode == 1 and rep["aborted"] and 0 < rep["answered"] < 4000 and rep["errors"] == 3, log


def test_head_that_does_not_fit_the_tail_is_refused(exported, tmp_path) -> None:
    e3, e4, x = exported
    srv = CloudServer(e3, "127.0.0.1", "")
    try:
        rc, log, rep = _run(
            tmp_path, "--inputs", str(x), "--head", str(e4 / "head.onnx"), "--url", srv.url, "--model", "tinyvgg_tail"
        )
    finally:
        srv.stop()
    assert rc == 2 and "do not match" in log and len(log.strip().splitlines()) == 1 and rep is None


def test_https_through_tls_verifies_the_certificate(exported, tmp_path) -> None:
    """--url https://...: the runner speaks TLS (as behind a TLS-terminating proxy) and refuses a certificate it
    cannot verify."""
    import ssl
    import threading

    from cpcdrl_deploy.serving.server import make_server

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    e3, _, x = exported
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    httpd = make_server(e3, "127.0.0.1", 0, token="tok")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"https://localhost:{httpd.server_address[1]}"
    base = [
        "--inputs",
        str(x),
        "--head",
        str(e3 / "head.onnx"),
        "--url",
        url,
        "--model",
        "tinyvgg_tail",
        "--timeout",
        "5",
    ]
    try:
        os.environ["SSL_CERT_FILE"] = str(
            cert
        )  # the runner's default context trusts this test's own CA, as a device would trust a real one
        try:
            rc, log, rep = _run(tmp_path, *base, token="tok")
        finally:
            del os.environ["SSL_CERT_FILE"]
        assert rc == 0, log
        full = ort_session(e3 / "full.onnx").run(None, {"input": np.load(x)})[0].argmax(1)
        assert [r["prediction"] for r in rep["records"]] == full.tolist()
        rc, log, rep = _run(tmp_path, *base, token="tok")  # a certificate nobody vouches for: refused, not used
        assert rc == 1 and rep["answered"] == 0 and "CERTIFICATE_VERIFY_FAILED" in log + json.dumps(rep), log[-500:]
    finally:
        httpd.shutdown()
        httpd.server_close()
