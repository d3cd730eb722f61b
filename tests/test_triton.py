"""``cpcdrl serve --engine triton``: the tails on NVIDIA Triton (PyTriton), the edge runner and tritonclient unchanged.

Triton's Python backend needs an interpreter whose shared libpython is its
own, so the engine runs in a Python of its own: CI builds one from Debian's
python3 (.ci/run) and points $CPCDRL_TRITON_PYTHON at it. Without that
variable the engine tests say so and skip; CI sets CPCDRL_REQUIRE_TRITON so
they fail there instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from cpcdrl_deploy.serving.manifest import ort_session
from tests.conftest import make_plan

from .test_edge_runner import _free_port, _run, exported  # noqa: F401 - the module fixture, shared

TRITON_PYTHON = os.environ.get("CPCDRL_TRITON_PYTHON")
needs_triton = pytest.mark.skipif(
    not TRITON_PYTHON and not os.environ.get("CPCDRL_REQUIRE_TRITON"),
    reason="set CPCDRL_TRITON_PYTHON to a Python with nvidia-pytriton, onnxruntime and numpy (.ci/run builds one)",
)


GRPC_CLIENT = """
import sys, numpy as np, tritonclient.grpc as g
c = g.InferenceServerClient(url=sys.argv[1])
cut = np.load(sys.argv[2])
i = g.InferInput("cut", list(cut.shape), "FP32")
i.set_data_from_numpy(cut)
np.save(sys.argv[3], c.infer("tinyvgg_tail", [i]).as_numpy("logits"))
"""


def _server(export_dir, **kw):
    from cpcdrl_deploy.serving.triton import TritonServer, tail_specs

    assert TRITON_PYTHON, "CPCDRL_REQUIRE_TRITON is set but CPCDRL_TRITON_PYTHON is not"
    # every port asked of the OS: the default metrics port (HTTP + 2) may be taken, and Triton then never comes up
    ports = dict(port=_free_port(), grpc_port=_free_port(), metrics_port=_free_port())
    return TritonServer(tail_specs(export_dir), TRITON_PYTHON, **ports, **kw)


@needs_triton
def test_edge_runner_and_tritonclient_against_triton(exported, tmp_path) -> None:  # noqa: F811
    """The fp32 tail batched by Triton's dynamic batcher: the runner's answers equal the whole pruned model's, and
    tritonclient over HTTP and gRPC gets the same logits as ONNX Runtime."""
    import tritonclient.http as httpclient

    e3, _, x = exported
    srv = _server(e3, max_batch=8, queue_delay_us=2000)
    try:
        rc, log, rep = _run(
            tmp_path, "--inputs", str(x), "--head", str(e3 / "head.onnx"), "--url", srv.url, "--model", "tinyvgg_tail"
        )
        images = np.load(x)
        cut = ort_session(e3 / "head.onnx").run(None, {"input": images[:4]})[0]
        want = ort_session(e3 / "tail.onnx").run(None, {"cut": cut})[0]
        client = httpclient.InferenceServerClient(url=srv.url.split("//", 1)[1])
        inp = httpclient.InferInput("cut", list(cut.shape), "FP32")
        inp.set_data_from_numpy(cut)
        got = client.infer("tinyvgg_tail", [inp]).as_numpy("logits")
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4
        # gRPC with tritonclient from the Triton environment (PyTriton depends on it): the test environment keeps
        # no gRPC stack of its own, whose protobuf pin would fight onnx's
        np.save(tmp_path / "cut.npy", cut)
        grpc = subprocess.run(
            [TRITON_PYTHON or "", "-c", GRPC_CLIENT, srv.grpc, str(tmp_path / "cut.npy"), str(tmp_path / "got.npy")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert grpc.returncode == 0, grpc.stderr[-2000:]
        assert np.abs(np.load(tmp_path / "got.npy") - want).max() <= 1e-4
        # concurrent single-image requests: the batcher may gather them; every answer still its own
        results: dict[int, np.ndarray] = {}

        def one(i: int) -> None:
            c = httpclient.InferenceServerClient(url=srv.url.split("//", 1)[1])
            inp = httpclient.InferInput("cut", [1, *cut.shape[1:]], "FP32")
            inp.set_data_from_numpy(cut[i : i + 1])
            results[i] = c.infer("tinyvgg_tail", [inp]).as_numpy("logits")

        threads = [threading.Thread(target=one, args=(i % 4,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(np.abs(results[i] - want[i : i + 1]).max() <= 1e-4 for i in range(4))
    finally:
        sizes = srv.stop()
    assert rc == 0, log
    full = ort_session(e3 / "full.onnx").run(None, {"input": images})[0].argmax(1)
    assert rep["answered"] == len(full) and rep["errors"] == 0
    assert [r["prediction"] for r in rep["records"]] == full.tolist()  # the split through Triton = the pruned model
    assert sum(sizes["tinyvgg_tail"].values()) >= 1 and max(int(k) for k in sizes["tinyvgg_tail"]) <= 8


@needs_triton
def test_an_int8_wire_tail_is_served_one_request_per_run(tmp_path) -> None:
    """The int8 wire's per-request scale has no batch dimension: that tail is not batched, and still right."""
    from cpcdrl_deploy.deploy.export import export_plan
    from cpcdrl_deploy.models.data import load_images

    e = tmp_path / "e8"
    export_plan(make_plan(tmp_path / "p.json", 3, 0.75), e, transfer="int8", check_images=16)
    x, _ = load_images("builtin").test.tensors(np.arange(12))
    np.save(tmp_path / "x.npy", x.numpy())
    srv = _server(e)
    try:
        assert "one request per run" in srv.banner
        rc, log, rep = _run(
            tmp_path, "--inputs", str(tmp_path / "x.npy"), "--head", str(e / "head.onnx"), "--url", srv.url,
            "--model", "tinyvgg_tail",
        )  # fmt: skip
    finally:
        sizes = srv.stop()
    assert rc == 0, log
    full = ort_session(e / "full.onnx").run(None, {"input": x.numpy()})[0].argmax(1)
    assert rep["errors"] == 0 and [r["prediction"] for r in rep["records"]] == full.tolist()
    assert set(sizes["tinyvgg_tail"]) == {"1"}


def test_serve_engine_triton_refuses_a_python_that_cannot_host_it_in_one_line(exported, tmp_path) -> None:  # noqa: F811
    from cpcdrl_deploy.cli import app
    from cpcdrl_deploy.serving.triton import triton_python_problem

    e3, _, _ = exported
    runner = CliRunner()
    cases = [(str(tmp_path / "no-python"), "no Python for the Triton engine")]
    problem = triton_python_problem(sys.executable)  # the test environment's: no pytriton, or a libpython not its own
    if problem is not None:
        cases.append((sys.executable, problem))
    for python, says in cases:
        res = runner.invoke(app, ["serve", str(e3), "--engine", "triton", "--triton-python", python])
        out = res.output.strip()
        assert res.exit_code != 0 and len(out.splitlines()) == 1 and "Traceback" not in out, out
        assert says in out and "python3 -m venv" in out  # what is wrong, and the fix
    res = runner.invoke(app, ["serve", str(e3), "--engine", "triton"], env={"CPCDRL_TOKEN": "t"})
    assert res.exit_code != 0 and "takes no bearer token" in res.output
