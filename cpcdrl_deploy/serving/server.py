"""The cloud half: an ONNX model served over HTTP with the KServe v2 / Open Inference Protocol.

Endpoints (https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/):
``GET /v2/health/live|ready``, ``GET /v2`` (server metadata),
``GET /v2/models/NAME[/versions/1]`` (model metadata), ``.../ready``, and
``POST .../infer`` with JSON tensors or the binary tensor data extension
(``Inference-Header-Content-Length``), which is what ``tritonclient[http]``
sends; so the official client works against this server and our edge runner
works against a real Triton server.

Standard library only (``ThreadingHTTPServer``: one thread per connection,
HTTP/1.1 keep-alive); ONNX Runtime sessions are safe to run from several
threads. Every request is validated -- body size, JSON, input names, datatypes,
shapes, byte counts -- and a bad one gets a 4xx with ``{"error": ...}`` while
the server keeps serving. Binds to 127.0.0.1 unless told otherwise; with a
token, every endpoint but health needs ``Authorization: Bearer TOKEN``.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cpcdrl_deploy import __version__
from cpcdrl_deploy.serving.kserve import RequestError, ServedModel, decode_infer, dumps, encode_infer

MAX_BODY = 64 * 1024 * 1024  # bytes; a CIFAR cut tensor is at most a few hundred KB per image
_ROUTE = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/ready|/infer|/config)?$")


@dataclass
class Stats:
    requests: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def load_served_model(path: str | Path, name: str, threads: int = 1) -> ServedModel:
    import onnx

    from cpcdrl_deploy.serving.manifest import io_specs, ort_session

    sess = ort_session(path, threads)
    specs = io_specs(onnx.load(str(path), load_external_data=False))
    return ServedModel(name, sess, specs["inputs"], specs["outputs"])


MAX_HEADERS, MAX_HEADER_LINE = 100, 65536  # http.client's limits


class _Headers:
    """Request headers by case-insensitive name, first value kept; the framing headers may not repeat."""

    _SINGLE = frozenset(
        {"content-length", "transfer-encoding", "inference-header-content-length", "authorization", "host"}
    )

    def __init__(self) -> None:
        self._d: dict[str, str] = {}

    def add(self, name: str, value: str) -> bool:
        key = name.lower()
        if key in self._d:
            return key not in self._SINGLE
        self._d[key] = value
        return True

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._d.get(name.lower(), default)


IDLE_TIMEOUT_S = 15.0  # a connection silent this long (idle keep-alive, or a body that stopped arriving) is closed
# A request's head must arrive within HEAD_DEADLINE_S of its first byte, and its body within HEAD_DEADLINE_S plus
# a second per BODY_MIN_RATE bytes: a client that drips one byte a second is never silent for IDLE_TIMEOUT_S, and
# without a deadline for the whole held its connection (and a thread) for as long as it liked. The rate is far
# below a Pi's slowest link here (30 KB/s): a 150 KB cut tensor may take 47 s.
HEAD_DEADLINE_S = 10.0
BODY_MIN_RATE = 4096  # bytes/s
# Open connections (one thread each, mostly waiting) and requests in progress (a body buffered, a model running).
# Open connections used to be capped at 64, and 70 clients that each drip a header byte a second took every slot.
MAX_CONNECTIONS = 512
MAX_ACTIVE = 64
ACTIVE_WAIT_S = 5.0  # a complete request waits this long for a slot before a 503


class DeadlineReader:
    """A connection's buffered reader with one deadline for everything read through it (``readline``, ``read``).

    Each wait is bounded by the time left and by the idle time-out, so a
    client that stops sending is still dropped after ``idle_s`` of silence,
    and one that drips bytes when ``seconds`` have passed in all.
    """

    def __init__(self, rfile, sock: socket.socket, seconds: float, idle_s: float) -> None:
        self.rfile, self.sock, self.idle_s = rfile, sock, idle_s
        self.deadline = time.monotonic() + seconds

    def extend(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request deadline passed")
        self.sock.settimeout(min(left, self.idle_s))

    def readline(self, limit: int = -1) -> bytes:
        out = bytearray()
        while limit < 0 or len(out) < limit:
            self._arm()
            buf = self.rfile.peek(1)  # what is buffered, or one read from the socket
            if not buf:
                break
            room = len(buf) if limit < 0 else min(len(buf), limit - len(out))
            i = buf.find(b"\n", 0, room)
            out += self.rfile.read(i + 1 if i >= 0 else room)  # all buffered: no further wait
            if i >= 0:
                break
        return bytes(out)

    def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            self._arm()
            chunk = self.rfile.read1(n - len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)


def read_headers(rfile) -> _Headers | tuple[int, str]:
    """The header block of a request, or (status, reason) for a block we refuse.

    Stricter than http.server where leniency helps request smuggling: no
    folded header lines, no repeated Content-Length or Transfer-Encoding.
    """
    headers = _Headers()
    for _ in range(MAX_HEADERS + 1):
        raw = rfile.readline(MAX_HEADER_LINE + 1)
        if len(raw) > MAX_HEADER_LINE:
            return 431, "header line too long"
        if raw in (b"\r\n", b"\n", b""):
            return headers
        name, sep, value = raw.decode("iso-8859-1").partition(":")
        if not sep or not name or name != name.strip() or raw[:1] in (b" ", b"\t"):
            return 400, "malformed header line"
        if not headers.add(name, value.strip()):
            return 400, f"header {name} given twice"
    return 431, "too many headers"


def reply_head(status: int, server: str, length: int, header_len: int | None, allow: str | None, close: bool) -> bytes:
    """Status line and headers of a reply, ready to be sent with its body in one write."""
    kind = "application/octet-stream" if header_len is not None else "application/json"
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"Server: {server}",
        f"Content-Type: {kind}",
        f"Content-Length: {length}",
    ]
    if allow:
        head.append(f"Allow: {allow}")
    if header_len is not None:
        head.append(f"Inference-Header-Content-Length: {header_len}")
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")


def get_reply(path: str, models: dict[str, ServedModel], stats: Stats) -> dict:
    """The JSON answer to a GET (health, server and model metadata, readiness, statistics)."""
    if path in ("/v2/health/live", "/v2/health/ready"):
        return {"live": True} if path.endswith("live") else {"ready": True}
    if path == "/v2":
        return {"name": "cpcdrl", "version": __version__, "extensions": ["binary_tensor_data"]}
    model, rest = route(path, models)
    if rest == "/ready":
        return {"name": model.name, "ready": True}
    if rest == "/config":
        return {
            "name": model.name,
            "platform": "onnxruntime_onnx",
            "max_batch_size": 0,
            "input": model.inputs,
            "output": model.outputs,
        }
    if rest == "/stats":  # Triton's statistics extension, the counts only: what deploy's progress bar polls
        with stats.lock:
            counts = {
                "inference_count": stats.requests,
                "execution_count": stats.requests,
                "refused_count": stats.errors,
            }
        return {"model_stats": [{"name": model.name, "version": model.version, **counts}]}
    if rest is None:
        return {
            "name": model.name,
            "versions": [model.version],
            "platform": "onnxruntime_onnx",
            "inputs": model.inputs,
            "outputs": model.outputs,
        }
    raise RequestError(405, f"{path} takes POST")


def route(path: str, models: dict[str, ServedModel]) -> tuple[ServedModel, str | None]:
    """(model, what after its name: /ready, /infer, /config, /stats or None) for a model path; 404 otherwise."""
    m = _ROUTE.match(path.split("?", 1)[0])
    if not m:
        raise RequestError(404, f"no route {path}")
    model = models.get(m["name"])
    if model is None:
        raise RequestError(404, f"unknown model {m['name']!r}; serving {sorted(models)}")
    if m["version"] not in (None, model.version):
        raise RequestError(404, f"model {model.name} has version {model.version} only")
    return model, m["rest"]


def infer(model: ServedModel, body: bytes, header_len_text: str | None) -> tuple[bytes, int | None]:
    """Run one infer request through ``model``'s session: the reply's bytes and its JSON header length."""
    try:
        header_len = int(header_len_text) if header_len_text is not None else None
    except ValueError:
        raise RequestError(400, "Inference-Header-Content-Length is not an integer") from None
    feeds, req, names, binary = decode_infer(model, body, header_len)
    t0 = time.perf_counter()
    try:
        outs = model.session.run(names, feeds)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - ORT rejects values it cannot run (e.g. inconsistent batch)
        raise RequestError(400, f"inference failed: {str(exc).splitlines()[0]}") from None
    compute_ms = (time.perf_counter() - t0) * 1000.0
    return encode_infer(model, req, names, dict(zip(names, outs)), binary, compute_ms)


class JsonReplies(BaseHTTPRequestHandler):
    """Replies in one write, and every refusal (http.server's own included) as a JSON error, counted."""

    stats: Stats

    def __getattr__(self, name: str):
        # any other method (PUT, HEAD, OPTIONS, FOO, ...): a JSON 405 naming what is allowed, not http.server's 501 page
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        # a body we will not read must not be taken for the next request: close after answering
        self._error(
            405, f"method {self.command} not allowed", close=True, allow="GET, POST", body=self.command != "HEAD"
        )

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (bad request line, header too long, ...): JSON too
        try:
            self._error(code, message or "bad request", close=True)
        except OSError:
            self.close_connection = True

    def _send(
        self,
        status: int,
        body: bytes,
        header_len: int | None = None,
        close: bool = False,
        allow: str | None = None,
        send_body: bool = True,
    ) -> None:
        # status line, headers and body in one write: one send() per reply instead of
        # http.server's two (headers, then body), which cost a second loopback wake-up
        if close:
            self.close_connection = True
        head = reply_head(status, self.server_version, len(body), header_len, allow, close)
        self.connection.settimeout(self.timeout)  # the reply: not bounded by what is left of the request's deadline
        self.wfile.write(head + (body if send_body else b""))

    def _json(self, status: int, obj: object, close: bool = False) -> None:
        self._send(status, dumps(obj), close=close)

    def _error(self, status: int, msg: str, close: bool = False, allow: str | None = None, body: bool = True) -> None:
        with self.stats.lock:
            self.stats.errors += 1
        self._send(status, json.dumps({"error": msg}).encode(), close=close, allow=allow, send_body=body)


class StrictHTTPHandler(JsonReplies):
    """http.server's handler made strict and lean: HTTP/1.0 and 1.1 only, bounded header reads, no Nagle delay."""

    protocol_version = "HTTP/1.1"  # keep-alive: one TCP connection per client, as tritonclient expects
    server_version = f"cpcdrl/{__version__}"

    def parse_request(self) -> bool:
        """http.server's request parsing with a lean header reader (its email parser costs about 0.1 ms a request);
        only HTTP/1.0 and 1.1."""
        self.command, self.request_version, self.close_connection = "", self.default_request_version, True
        self.requestline = line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = line.split()
        if not words:
            return False
        refusal = _request_line_refusal(words, line)
        if refusal is not None:
            self.send_error(*refusal)
            return False
        self.command, self.path, self.request_version = words
        self.close_connection = self.request_version == "HTTP/1.0"
        if self.path.startswith("//"):  # as http.server (gh-87389): never an absolute URI without scheme
            self.path = "/" + self.path.lstrip("/")
        headers = read_headers(self.rfile)
        if isinstance(headers, tuple):
            self.send_error(*headers)
            return False
        self.headers = headers  # type: ignore[assignment]
        conn = (headers.get("Connection") or "").lower()
        if conn in ("close", "keep-alive"):
            self.close_connection = conn == "close"
        if (headers.get("Expect") or "").lower() == "100-continue" and self.request_version == "HTTP/1.1":
            return self.handle_expect_100()
        return True

    head_deadline_s: float = HEAD_DEADLINE_S

    def handle_one_request(self) -> None:
        """Wait for a request's first byte as long as a connection may idle, then read it under one deadline."""
        raw: Any = self.rfile  # socketserver's buffered reader (rbufsize -1): it has peek
        try:
            self.connection.settimeout(self.timeout)
            if not raw.peek(1):
                self.close_connection = True
                return
        except OSError:  # silent for the idle time-out (TimeoutError), or reset
            self.close_connection = True
            return
        self.rfile = DeadlineReader(raw, self.connection, self.head_deadline_s, self.timeout or IDLE_TIMEOUT_S)  # type: ignore[assignment]
        try:
            super().handle_one_request()
        finally:
            self.rfile = raw

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        pass  # quiet: the counters tell the story

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes: without TCP_NODELAY, Nagle's
        # algorithm holds the body until the client's delayed ACK (~40 ms)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def body_length(header: str | None, max_body: int) -> int | tuple[int, str]:
    """The body's length from its Content-Length header, or (status, reason) refusing it."""
    if header is None:
        return 411, "Content-Length required (chunked bodies are not accepted)"
    try:
        length = int(header)
    except ValueError:
        length = -1
    if length < 0 or length > max_body:
        return 413 if length > max_body else 400, f"body of {header} bytes refused (limit {max_body})"
    return length


def _request_line_refusal(words: list[str], line: str) -> tuple[int, str] | None:
    """(status, reason) for a request line this server refuses; None for METHOD PATH HTTP/1.0 or 1.1."""
    if len(words) != 3 or not words[2].startswith("HTTP/"):
        return 400, f"bad request line {line[:80]!r}"
    if words[2] not in ("HTTP/1.0", "HTTP/1.1"):
        return 505, f"HTTP version {words[2][5:][:10]!r} not supported (1.0, 1.1)"
    return None


class KServeHandler(StrictHTTPHandler):
    """The KServe v2 routes over ``models``; a subclass per server sets the class attributes (``make_handler``)."""

    models: dict[str, ServedModel]
    token: str | None
    max_body: int
    active: threading.BoundedSemaphore

    def _has_body(self) -> bool:
        return self.headers.get("Transfer-Encoding") is not None or (
            self.headers.get("Content-Length") or "0"
        ).strip() not in ("0", "")

    def _authorised(self) -> bool:
        if self.token is None or self.path.startswith("/v2/health/"):
            return True
        got = self.headers.get("Authorization") or ""
        return hmac.compare_digest(got.encode(), f"Bearer {self.token}".encode())

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        # a GET never has a body we read: close after answering, so it is not parsed as a pipelined request
        if self._has_body():
            self.close_connection = True
        try:
            if not self._authorised():
                raise RequestError(401, "missing or wrong bearer token")
            self._json(200, get_reply(self.path, self.models, self.stats))
        except RequestError as exc:
            self._error(exc.status, str(exc), close=self.close_connection, allow="POST" if exc.status == 405 else None)

    def _admit(self) -> tuple[ServedModel, int] | None:
        """(model, body length) of an infer request, checked before its body is read; None once refused."""
        # refuse before reading: an oversized or unsized body is never buffered
        length = body_length(self.headers.get("Content-Length"), self.max_body)
        if isinstance(length, tuple):
            self._error(*length, close=True)
            return None
        try:
            # route and token before the body: an unauthenticated client never makes us buffer its upload
            if not self._authorised():
                raise RequestError(401, "missing or wrong bearer token")
            if self.headers.get("Content-Encoding", "identity") not in ("identity", ""):
                raise RequestError(415, "compressed requests are not supported")
            model, rest = route(self.path, self.models)
            if rest != "/infer":
                raise RequestError(405, f"{self.path} takes GET")
        except RequestError as exc:  # its body stays unread: close
            self._error(exc.status, str(exc), close=True, allow="GET" if exc.status == 405 else None)
            return None
        return model, length

    def do_POST(self) -> None:  # noqa: N802
        admitted = self._admit()
        if admitted is None:
            return
        # only a request whose head is in holds a slot (MAX_ACTIVE): slow heads take no memory and no CPU
        if not self.active.acquire(timeout=ACTIVE_WAIT_S):
            return self._error(503, "server busy: too many requests in progress, retry later", close=True)
        try:
            self._infer(*admitted)
        finally:
            self.active.release()

    def _infer(self, model: ServedModel, length: int) -> None:
        try:
            body = read_body(self.rfile, length, self.head_deadline_s)
        except TimeoutError:
            return self._error(408, f"body not received in time (or silent for {self.timeout:g} s)", close=True)
        if len(body) < length:
            self.close_connection = True
            return
        try:
            payload, header_len_out = infer(model, body, self.headers.get("Inference-Header-Content-Length"))
            with self.stats.lock:
                self.stats.requests += 1
            self._send(200, payload, header_len_out)
        except RequestError as exc:
            self._error(exc.status, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug, not the client's fault: still JSON, still serving
            self._error(500, f"internal error: {type(exc).__name__}", close=True)


def read_body(rfile, length: int, head_deadline_s: float) -> bytes:
    """A request's body: ``length`` bytes within ``head_deadline_s`` plus a second per BODY_MIN_RATE bytes."""
    if isinstance(rfile, DeadlineReader):
        rfile.extend(head_deadline_s + length / BODY_MIN_RATE)
    return rfile.read(length)


def make_handler(
    models: dict[str, ServedModel],
    token: str | None,
    stats: Stats,
    max_body: int = MAX_BODY,
    timeout_s: float = IDLE_TIMEOUT_S,
    head_deadline_s: float = HEAD_DEADLINE_S,
    max_active: int = MAX_ACTIVE,
) -> type[KServeHandler]:
    """A handler class bound to one server's models, token and counters.

    ``timeout``: every read and write on the connection, so a slow or silent client cannot hold a thread forever;
    ``head_deadline_s``: a request's whole head (see ``HEAD_DEADLINE_S``); ``max_active``: infer requests in progress.
    """
    attrs = {
        "models": models,
        "token": token,
        "stats": stats,
        "max_body": max_body,
        "timeout": timeout_s,
        "head_deadline_s": head_deadline_s,
        "active": threading.BoundedSemaphore(max_active),
    }
    return type("Handler", (KServeHandler,), attrs)


def exposure_warning(host: str, token: str | None) -> str | None:
    """What a user binding to ``host`` should know: no token on a reachable address, or a token sent in clear."""
    import ipaddress

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    if token is None:
        return (
            f"serving on {host} without a token: anyone who reaches this address can use the model (set $CPCDRL_TOKEN)"
        )
    return (
        f"serving on {host} over plain HTTP: the bearer token crosses the network in clear (put a TLS-terminating proxy"
        " in front)"
    )


class CappedHTTPServer(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` at once; beyond that a 503 and the connection closed."""

    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of clients connecting at once
    # overflows it and the kernel drops their SYNs, which clients resend only after 1 s
    request_queue_size = 128

    def __init__(self, address, handler, max_connections: int = MAX_CONNECTIONS) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            body = json.dumps({"error": "server busy: too many connections, retry later"}).encode()
            try:
                request.settimeout(1.0)
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After:"
                    b" 1\r\nConnection: close\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        # a client that resets or stalls is routine here, not a traceback on stderr
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def make_server(
    export_dir: str | Path | list,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    threads: int = 1,
    max_body: int = MAX_BODY,
    max_connections: int = MAX_CONNECTIONS,
    timeout_s: float = IDLE_TIMEOUT_S,
    head_deadline_s: float = HEAD_DEADLINE_S,
    max_active: int = MAX_ACTIVE,
):
    """A ready (not yet serving) server for the tail of an export directory, or of each of several.

    Several (``cpcdrl bench``): one KServe v2 model per tail, each named
    ``p<i>`` after its directory's position, since plans of one model export
    tails of the same name.
    """
    from cpcdrl_deploy.core.errors import CpcdrlError

    models = {name: load_served_model(path, name, threads) for name, path, _ in served_tails(export_dir)}
    stats = Stats()
    try:
        handler = make_handler(models, token, stats, max_body, timeout_s, head_deadline_s, max_active)
        httpd = CappedHTTPServer((host, port), handler, max_connections)
    except OSError as exc:
        raise CpcdrlError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    httpd.cpcdrl_stats = stats  # type: ignore[attr-defined]
    httpd.cpcdrl_model = next(iter(models.values()))  # type: ignore[attr-defined]
    httpd.cpcdrl_models = models  # type: ignore[attr-defined]
    return httpd


SET_FILE = "planset.json"  # in a plan set's export folder (export_set): its members' exports are folders beside it


def set_tails(folder: Path) -> list[tuple[Path, str]]:
    """(export folder, served name) of each member of an exported plan set that has a tail: named as the member."""
    import json

    try:
        members = json.loads((folder / SET_FILE).read_text())["members"]
        names = [m["name"] for m in members]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        from cpcdrl_deploy.core.errors import CpcdrlError

        raise CpcdrlError(f"{folder / SET_FILE}: not a plan set export ({exc})") from None
    from cpcdrl_deploy.serving.manifest import load_manifest

    return [(folder / n, n) for n in names if load_manifest(folder / n).spec("tail") is not None]


def served_tails(export_dir: str | Path | list) -> list[tuple[str, Path, Any]]:
    """(served name, ONNX file, ``ModelFile``) of each tail to serve: of an export directory, of several (named
    ``p<i>``, ``served_names``), or of a plan set's export (named as its members, ``set_tails``). What every engine
    serves (``make_server``, ``triton.tail_specs``); refuses an export with no tail."""
    from cpcdrl_deploy.core.errors import CpcdrlError
    from cpcdrl_deploy.serving.manifest import load_manifest

    dirs = export_dir if isinstance(export_dir, list) else [export_dir]
    pairs = set_tails(Path(dirs[0])) if len(dirs) == 1 and (Path(dirs[0]) / SET_FILE).exists() else None
    out = []
    for d, name in pairs if pairs is not None else zip(dirs, served_names(dirs)):
        tail = load_manifest(d).spec("tail")
        if tail is None:
            raise CpcdrlError(f"{d}: the plan's cut is N (all on the edge): there is no tail to serve")
        out.append((name, Path(d) / tail.file, tail))
    if not out:
        raise CpcdrlError(f"{dirs[0]}: every plan of the set runs all on the edge: there is no tail to serve")
    return out


def served_names(dirs: list) -> list[str]:
    """The model name each export directory's tail is served under: its own name when alone, else ``p<i>``.

    One rule for the server and for whoever sends it requests
    (``session.run_interleaved``): plans of one model export tails of the
    same name, and a bench of several plans may hold only one tail.
    """
    from cpcdrl_deploy.serving.manifest import load_manifest

    if len(dirs) == 1:
        tail = load_manifest(dirs[0]).spec("tail")
        return [tail.model_name if tail is not None else "p0"]
    return [f"p{i}" for i in range(len(dirs))]


def main(argv: list[str] | None = None) -> int:
    """``python -m cpcdrl_deploy.serving.server DIR``: what ``cpcdrl serve`` runs (and ``deploy`` starts)."""
    from cpcdrl_deploy.core.errors import CpcdrlError

    ap = argparse.ArgumentParser(description="Serve an export's tail over the KServe v2 protocol")
    ap.add_argument("export_dir", nargs="+", help="one export directory, or several (one model p<i> per tail)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-body", type=int, default=MAX_BODY)
    args = ap.parse_args(argv)
    token = os.environ.get("CPCDRL_TOKEN") or None  # from the environment: a token on the command line shows in `ps`
    try:
        httpd = make_server(
            args.export_dir if len(args.export_dir) > 1 else args.export_dir[0],
            args.host,
            args.port,
            token,
            args.threads,
            args.max_body,
        )
    except CpcdrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if (warn := exposure_warning(args.host, token)) is not None:
        print(f"warning: {warn}", file=sys.stderr, flush=True)
    host, port = httpd.server_address[:2]
    print(
        f"serving {', '.join(httpd.cpcdrl_models)} on http://{host}:{port} (KServe"
        f" v2{', bearer token' if token else ''})",
        flush=True,
    )
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
