"""The request probe: payloads of known sizes through the real edge runner and server, and the line fitted to them."""

from __future__ import annotations

import numpy as np
import pytest

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.measure.request_probe import build_probe_exports, fit


def test_probe_exports_send_the_sizes_they_promise(tmp_path) -> None:
    from cpcdrl_deploy.serving.manifest import load_manifest, ort_session
    from cpcdrl_deploy.serving.server import make_server

    probes = build_probe_exports(tmp_path, sizes=(512, 20_000))
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    for size, head, d in probes:
        cut = ort_session(head.read_bytes()).run(None, {"x": x})[0]
        assert cut.dtype == np.float32 and cut.nbytes == size  # 20,000 bytes: more than the image, tiled
        assert np.array_equal(cut.ravel(), np.tile(x.ravel(), -(-cut.size // x.size))[: cut.size])
        m = load_manifest(d)  # a manifest the server accepts, checksums and all
        total = ort_session((d / m.files["tail"].file).read_bytes()).run(None, {"cut": cut})[0]
        assert total.shape == (1, 1) and total[0, 0] == pytest.approx(cut.sum(), rel=1e-4)
    httpd = make_server([d for _, _, d in probes], port=0)
    try:
        assert sorted(httpd.cpcdrl_models) == ["p0", "p1"]
    finally:
        httpd.server_close()


def test_fit_recovers_rate_and_overhead() -> None:
    rate, overhead, rtt = 250_000.0, 1.5, 0.4
    pts = [(b, rtt + overhead + 1000.0 * b / rate) for b in (600, 4_200, 16_500, 65_700)]
    res = fit(pts, rtt)
    assert res["bytes_per_s"] == pytest.approx(rate, rel=1e-6) and res["request_overhead_ms"] == pytest.approx(
        overhead, abs=1e-6
    )
    assert fit([(600, 0.1), (65_700, 2.0)], rtt_ms=5.0)["request_overhead_ms"] == 0.0  # never a negative overhead
    with pytest.raises(CpcdrlError, match="two payload sizes"):
        fit([(600, 1.0)], 0.0)
    with pytest.raises(CpcdrlError, match="no cost per byte"):
        fit([(600, 5.0), (65_700, 4.0)], 0.0)


def test_request_probe_times_the_real_runner_and_server() -> None:
    """On this host (loopback, where a byte costs next to nothing: the fit is the testbed test's): every size
    answered."""
    from cpcdrl_deploy.devices.remote import connect
    from cpcdrl_deploy.measure.latency import AnalyticLatencyModel
    from cpcdrl_deploy.measure.request_probe import SIZES, time_requests

    dev = connect("local")
    try:
        points = time_requests(dev, "127.0.0.1", seconds=0.2)
    finally:
        dev.close()
    assert len(points) == len(SIZES) and all(ms > 0 for _, ms in points)
    # bytes as sent: each payload plus the protocol's header, in size order
    assert all(s < b < s + 1024 for (b, _), s in zip(points, SIZES)), points
    from cpcdrl_deploy.compress.pruning import channel_groups, plan_shape
    from cpcdrl_deploy.models.graph import analyze
    from cpcdrl_deploy.models.zoo import build_model

    net = build_model("tinyvgg")
    a = analyze(net, 32, "tinyvgg")
    shape = plan_shape(a, channel_groups(net, a), 2, [1.0, 1.0])
    plain = AnalyticLatencyModel(5e8, 5e9, 2e5, 2e5, 1.0)
    probed = AnalyticLatencyModel(5e8, 5e9, 2e5, 2e5, 1.0, request_overhead_ms=2.5)
    assert probed.predict("tinyvgg", shape).transfer_ms == pytest.approx(
        plain.predict("tinyvgg", shape).transfer_ms + 2.5
    )
    assert "2.50 ms per request" in probed.describe()


def test_a_failed_probe_keeps_the_ssh_link(monkeypatch) -> None:
    """Whatever the probe raises, the profile keeps its tables and the link its SSH figures, with a line saying why."""
    from cpcdrl_deploy.measure import request_probe as linkprobe
    from cpcdrl_deploy.measure.profile import LinkProfile
    from cpcdrl_deploy.measure.profiler import with_request_probe

    def boom(*a, **k):
        raise OSError("connection reset")

    monkeypatch.setattr(linkprobe, "measure_request_link", boom)
    link = LinkProfile(uplink_bytes_per_s=200_000.0, downlink_bytes_per_s=200_000.0, rtt_ms=1.2)
    lines: list[str] = []
    assert with_request_probe(object(), link, "198.18.0.1", lines.append) is link
    assert lines == ["request probe skipped (connection reset); the link keeps the SSH figures"]
