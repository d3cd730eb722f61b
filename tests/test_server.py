"""The KServe v2 server: tritonclient works against it, every bad request is a 4xx and the server stays up."""

from __future__ import annotations

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cpcdrl_deploy.deploy.export import export_plan
from cpcdrl_deploy.serving.manifest import ort_session
from cpcdrl_deploy.serving.server import make_server
from tests.conftest import make_plan

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def server(tail_export):
    httpd = make_server(tail_export, "127.0.0.1", 0, token=TOKEN, max_body=1_000_000)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _post(server, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    host, port = server.server_address[:2]
    c = http.client.HTTPConnection(host, port, timeout=10)
    h = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", **(headers or {})}
    c.request("POST", path, body, h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, json.loads(data) if data.startswith(b"{") else {}


def _headers_only(server, headers: dict) -> int:
    host, port = server.server_address[:2]
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.putrequest("POST", "/v2/models/tinyvgg_tail/infer", skip_accept_encoding=True)
    for k, v in {"Authorization": f"Bearer {TOKEN}", **headers}.items():
        c.putheader(k, v)
    c.endheaders()
    status = c.getresponse().status
    c.close()
    return status


def _x(n: int = 1) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 24, 16, 16)).astype(np.float32)


def test_tritonclient_binary_and_json(server, tail_export) -> None:
    import tritonclient.http as th

    host, port = server.server_address[:2]
    client = th.InferenceServerClient(f"{host}:{port}")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.is_server_live() and client.is_model_ready("tinyvgg_tail", headers=auth)
    meta = client.get_model_metadata("tinyvgg_tail", headers=auth)
    assert meta["inputs"] == [{"name": "cut", "datatype": "FP32", "shape": [-1, 24, 16, 16]}]
    want = ort_session(tail_export / "tail.onnx").run(None, {"cut": _x(3)})[0]
    for binary in (True, False):
        inp = th.InferInput("cut", [3, 24, 16, 16], "FP32")
        inp.set_data_from_numpy(_x(3), binary_data=binary)
        res = client.infer(
            "tinyvgg_tail", [inp], outputs=[th.InferRequestedOutput("logits", binary_data=binary)], headers=dict(auth)
        )  # tritonclient adds to the dict
        np.testing.assert_allclose(res.as_numpy("logits"), want, atol=1e-5)
    with pytest.raises(th.InferenceServerException, match="401|token"):
        client.infer("tinyvgg_tail", [inp])


def _binary_request(
    x: np.ndarray, dtype: str = "FP32", size: int | None = None, name: str = "cut"
) -> tuple[bytes, dict]:
    raw = x.tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(x.shape),
                    "datatype": dtype,
                    "parameters": {"binary_data_size": size or len(raw)},
                }
            ]
        }
    ).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


@pytest.mark.parametrize(
    "body_headers,status,match",
    [
        ((b"{not json", {}), 400, "not JSON"),
        ((json.dumps({"inputs": "x"}).encode(), {}), 400, "inputs"),
        (_binary_request(_x(), dtype="FP16"), 400, "datatype"),
        (_binary_request(np.zeros((1, 3, 16, 16), np.float32)), 400, "shape"),
        (_binary_request(_x(), size=100), 400, "binary_data_size"),
        (_binary_request(_x(), name="nope"), 400, "unknown input"),
        ((_binary_request(_x())[0], {"Inference-Header-Content-Length": "999999"}), 400, "outside the body"),
        (
            (
                json.dumps(
                    {"inputs": [{"name": "cut", "shape": [1, 24, 16, 16], "datatype": "FP32", "data": [1.0, 2.0]}]}
                ).encode(),
                {},
            ),
            400,
            "values for shape",
        ),
    ],
)
def test_malformed_requests_get_4xx_and_server_stays_up(server, body_headers, status: int, match: str) -> None:
    body, headers = body_headers
    code, err = _post(server, "/v2/models/tinyvgg_tail/infer", body, headers)
    assert code == status and match in err["error"]
    ok_code, _ = _post(server, "/v2/models/tinyvgg_tail/infer", *_binary_request(_x()))
    assert ok_code == 200


def test_oversized_unsized_unknown_and_unauthorised(server) -> None:
    assert _headers_only(server, {"Content-Length": "2000000"}) == 413  # refused before the body is read (limit 1 MB)
    assert _post(server, "/v2/models/other/infer", *_binary_request(_x()))[0] == 404
    assert _post(server, "/v2/models/tinyvgg_tail/infer", *_binary_request(_x()))[0] == 200
    assert _headers_only(server, {}) == 411  # no Content-Length
    assert _post(server, "/v2/models/tinyvgg_tail/infer", *_binary_request(_x()))[0] == 200
    code, err = _post(
        server,
        "/v2/models/tinyvgg_tail/infer",
        _binary_request(_x())[0],
        {"Authorization": "Bearer wrong", **_binary_request(_x())[1]},
    )
    assert code == 401 and "token" in err["error"]


def test_concurrent_clients_all_answered(server, tail_export) -> None:
    want = ort_session(tail_export / "tail.onnx").run(None, {"cut": _x()})[0]

    def client(_: int) -> float:
        from cpcdrl_deploy.ondevice.runner import Remote

        host, port = server.server_address[:2]
        r = Remote(f"http://{host}:{port}", "tinyvgg_tail", 10.0, TOKEN)
        worst = 0.0
        for _ in range(10):
            out, server_ms, sent = r.infer({"cut": _x()})
            worst = max(worst, float(np.abs(out - want).max()))
            assert server_ms is not None and sent > _x().nbytes
        r.close()
        return worst

    with ThreadPoolExecutor(8) as pool:
        assert max(pool.map(client, range(8))) < 1e-5


def test_loopback_by_default_and_a_tail_is_needed(tmp_path) -> None:
    from cpcdrl_deploy.core.errors import CpcdrlError

    export_plan(make_plan(tmp_path / "p.json", 7, 0.5), tmp_path / "edge-only", check_images=8)
    with pytest.raises(CpcdrlError, match="no tail"):
        make_server(tmp_path / "edge-only")
    import inspect

    assert inspect.signature(make_server).parameters["host"].default == "127.0.0.1"
