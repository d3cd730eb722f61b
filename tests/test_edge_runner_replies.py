"""The edge runner against servers that answer 200 with garbage, trickle, or list no inputs: failures, not crashes."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from cpcdrl_deploy.ondevice.runner import BadReply, parse_reply
from tests.test_edge_runner import _run, exported  # noqa: F401 - the module fixture

GOOD_HEAD = {
    "model_name": "t",
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 10], "parameters": {"binary_data_size": 40}}],
}


def _reply(mode: str) -> tuple[bytes, dict]:
    head = json.dumps(GOOD_HEAD).encode()
    blob = np.zeros((1, 10), np.float32).tobytes()
    if mode == "nonjson":
        return b"<html>oops</html>", {}
    if mode == "badhl":
        return head + blob, {"Inference-Header-Content-Length": "99999"}
    if mode == "wrongdtype":
        return json.dumps({"outputs": [dict(GOOD_HEAD["outputs"][0], datatype="BYTES")]}).encode() + blob, {
            "Inference-Header-Content-Length": None
        }
    if mode == "shortblob":
        return head + blob[:7], {"Inference-Header-Content-Length": str(len(head))}
    if mode == "nooutputs":
        return json.dumps({"outputs": []}).encode(), {}
    return head + blob, {"Inference-Header-Content-Length": str(len(head))}


def _server(mode: str, meta_inputs: bool = True):
    seen_ids: list[str] = []

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            meta = {
                "name": "tail",
                "inputs": [{"name": "cut", "datatype": "FP32", "shape": [-1, 24, 16, 16]}] if meta_inputs else [],
            }
            body = json.dumps(meta).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            n = int(self.headers["Content-Length"])
            body = self.rfile.read(n)
            hl = int(self.headers["Inference-Header-Content-Length"])
            seen_ids.append(json.loads(body[:hl]).get("id"))
            data, extra = _reply(mode)
            if mode == "wrongdtype":
                extra = {"Inference-Header-Content-Length": str(data.index(b"}]}") + 3)}
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra.items():
                if v is not None:
                    self.send_header(k, v)
            self.end_headers()
            if mode == "trickle":
                for i in range(len(data)):
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.2)
            else:
                self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, seen_ids


@pytest.mark.parametrize("mode", ["nonjson", "badhl", "wrongdtype", "shortblob", "nooutputs"])
def test_malformed_200_is_a_failed_request_with_report_and_fallback(mode, exported, tmp_path) -> None:  # noqa: F811
    e3, _, x = exported
    httpd, ids = _server(mode)
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        base = ["--inputs", str(x), "--head", str(e3 / "head.onnx"), "--url", url, "--model", "tail", "--timeout", "2"]
        rc, log, rep = _run(tmp_path, *base)
        assert (
            rc == 1
            and rep is not None
            and rep["aborted"]
            and "3 consecutive" in rep["aborted"]
            and rep["answered"] == 0
        ), log
        assert all("BadReply" in r["error"] for r in rep["records"])
        rc, log, rep = _run(tmp_path, *base, "--fallback", "local", "--full", str(e3 / "full.onnx"))
        assert rc == 0 and rep["answered"] == 40 and rep["fallbacks"] == 40, log
    finally:
        httpd.shutdown()
    assert ids and all(
        isinstance(i, str) and i for i in ids
    )  # a request id with every request (KServe's response type needs one)


def test_trickling_server_is_bounded_by_the_timeout(exported, tmp_path) -> None:  # noqa: F811
    e3, _, x = exported
    httpd, _ = _server("trickle")
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        t0 = time.monotonic()
        rc, log, rep = _run(
            tmp_path,
            "--inputs",
            str(x),
            "--head",
            str(e3 / "head.onnx"),
            "--url",
            url,
            "--model",
            "tail",
            "--timeout",
            "1",
            "--warmup",
            "0",
        )
        took = time.monotonic() - t0
    finally:
        httpd.shutdown()
    # three requests of at most ~1 s each, not a byte every 0.2 s for the whole reply
    assert rc == 1 and rep["aborted"] and all("within 1 s" in r["error"] for r in rep["records"]), log
    assert took < 15, took


def test_metadata_without_inputs_is_checked_on_the_first_reply(exported, tmp_path) -> None:  # noqa: F811
    e3, _, x = exported
    httpd, _ = _server("good", meta_inputs=False)
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        rc, log, rep = _run(
            tmp_path, "--inputs", str(x), "--head", str(e3 / "head.onnx"), "--url", url, "--model", "tail"
        )
    finally:
        httpd.shutdown()
    assert rc == 0 and rep["answered"] == 40, log
    assert "lists no inputs" in rep["metadata_check"] and "first reply instead: FP32 [1, 10]" in rep["metadata_check"]


def test_parse_reply_accepts_json_and_binary() -> None:
    arr, ms = parse_reply(
        json.dumps(
            {
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}],
                "parameters": {"cpcdrl_compute_ms": 0.5},
            }
        ).encode(),
        None,
        "logits",
    )
    assert arr.tolist() == [[1.0, 2.0]] and ms == 0.5
    with pytest.raises(BadReply):
        parse_reply(
            b'{"outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 3], "data": [1, 2]}]}', None, "logits"
        )
