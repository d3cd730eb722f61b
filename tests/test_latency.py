from __future__ import annotations

import json

import pytest

from cpcdrl_deploy.analysis import analyze
from cpcdrl_deploy.errors import CpcdrlError
from cpcdrl_deploy.latency import AnalyticLatencyModel, build_latency_model
from cpcdrl_deploy.profiles import LinkProfile, Profile, load_profile, save_profile
from cpcdrl_deploy.pruning import channel_groups, plan_shape
from cpcdrl_deploy.zoo import build_model


@pytest.fixture(scope="module")
def vgg():
    m = build_model("vgg16")
    a = analyze(m, 32, "vgg16")
    return a, channel_groups(m, a)


def test_paper_profile_figures(vgg) -> None:
    a, groups = vgg
    lm = build_latency_model(load_profile("paper"), load_profile("paper"))
    n = a.n_layers
    # all on the edge: 313,201,664 MACs / 500e6 per s
    edge_only = lm.predict("vgg16", plan_shape(a, groups, n, [1.0] * n))
    assert edge_only.edge_ms == pytest.approx(626.403328)
    assert edge_only.transfer_ms == 0 and edge_only.cloud_ms == 0
    # all on the cloud: 12,288 input bytes / 200,000 B/s + MACs / 5e9
    cloud_only = lm.predict("vgg16", plan_shape(a, groups, 0, []))
    assert cloud_only.transfer_ms == pytest.approx(61.44)
    assert cloud_only.cloud_ms == pytest.approx(62.6403328)
    assert cloud_only.return_ms == 0.0
    assert cloud_only.total_ms == pytest.approx(61.44 + 62.6403328)
    # cut 2: 2 convs on the edge, the pooled 64x16x16 float32 tensor crosses
    mid = lm.predict("vgg16", plan_shape(a, groups, 2, [1.0, 1.0]))
    assert mid.edge_ms == pytest.approx(1000 * (1_769_472 + 37_748_736) / 5e8)
    assert mid.transfer_ms == pytest.approx(1000 * 65_536 / 2e5)


def test_pruning_shrinks_edge_time_and_cut_bytes(vgg) -> None:
    a, groups = vgg
    lm = AnalyticLatencyModel(5e8, 5e9, 2e5, 2e5)
    full = lm.predict("vgg16", plan_shape(a, groups, 4, [1.0] * 4))
    half = lm.predict("vgg16", plan_shape(a, groups, 4, [0.5] * 4))
    assert half.transfer_ms == pytest.approx(full.transfer_ms / 2)
    # conv2..4 lose 3/4 of their MACs, conv1 half, the first cloud layer half
    assert half.edge_ms < 0.3 * full.edge_ms
    assert half.cloud_ms < full.cloud_ms


def test_result_return_and_rtt_are_visible_terms(vgg) -> None:
    a, groups = vgg
    lm = AnalyticLatencyModel(5e8, 5e9, 2e5, 1e5, rtt_ms=7.0, count_result_return=True)
    b = lm.predict("vgg16", plan_shape(a, groups, 0, []))
    assert b.return_ms == pytest.approx(1000 * 40 / 1e5)
    assert b.transfer_ms == pytest.approx(61.44 + 7.0)


def test_profile_round_trip_and_errors(tmp_path) -> None:
    p = Profile("x", "analytic", link=LinkProfile(1e6, 2e6, 3.0))
    path = save_profile(p, tmp_path / "x.json")
    assert load_profile(path) == p
    assert json.loads(path.read_text())["schema_version"] == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**p.to_dict(), "schema_version": 99}))
    with pytest.raises(CpcdrlError, match="schema_version"):
        load_profile(bad)
    with pytest.raises(CpcdrlError, match="unknown profile"):
        load_profile("no-such-profile")
    with pytest.raises(CpcdrlError, match="no compute rate"):
        build_latency_model(p, p)
