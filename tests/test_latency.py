from __future__ import annotations

import json

import pytest

from cpcdrl_deploy.compress.pruning import channel_groups, plan_shape
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.measure.latency import AnalyticLatencyModel, build_latency_model
from cpcdrl_deploy.measure.profile import (
    LayerPoint,
    LayerRow,
    LinkProfile,
    ModelTable,
    Profile,
    load_profile,
    save_profile,
)
from cpcdrl_deploy.models.graph import analyze
from cpcdrl_deploy.models.zoo import build_model


def _point(p: dict) -> dict:
    return {"io_bytes": 0, **p}


def _row(r: dict) -> dict:
    return {"name": f"l{r['index']}", "kind": "conv", "in_channels": 1, "out_channels": 1, **r}


def typed(tables: dict) -> dict[str, ModelTable]:
    """Sparse tables written for a test, typed: the fields every profile has get neutral values."""
    return {
        m: ModelTable.model_validate(
            {"grid": [1.0], "threads": 1, "weights": "test", "total_macs": 0, "layers": [], **t}
            | {"layers": [_row(r) | {"points": [_point(p) for p in r["points"]]} for r in t.get("layers", [])]}
        )
        for m, t in tables.items()
    }


def points(pts: list[dict]) -> list[LayerPoint]:
    return [LayerPoint.model_validate(_point(p)) for p in pts]


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
    p = Profile(
        name="x", kind="analytic", link=LinkProfile(uplink_bytes_per_s=1e6, downlink_bytes_per_s=2e6, rtt_ms=3.0)
    )
    path = save_profile(p, tmp_path / "x.json")
    assert load_profile(path) == p
    assert json.loads(path.read_text())["schema_version"] == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**p.to_data(), "schema_version": 99}))
    with pytest.raises(CpcdrlError, match="schema_version"):
        load_profile(bad)
    with pytest.raises(CpcdrlError, match="unknown profile"):
        load_profile("no-such-profile")
    with pytest.raises(CpcdrlError, match="no compute rate"):
        build_latency_model(p, p)


def test_interpolation_on_grid_and_axes() -> None:
    from cpcdrl_deploy.measure.latency import interpolate_layer

    grid = [{"in_keep": i, "out_keep": o, "ms": 10 * i + o} for i in (0.5, 1.0) for o in (0.5, 1.0)]
    assert interpolate_layer(points(grid), 1.0, 1.0) == pytest.approx(11.0)
    assert interpolate_layer(points(grid), 0.75, 0.75) == pytest.approx(8.25)  # bilinear
    assert interpolate_layer(points(grid), 0.25, 0.5) == pytest.approx(3.0)  # extrapolated along in
    diag = [{"in_keep": f, "out_keep": f, "ms": 4 * f} for f in (0.25, 0.5, 1.0)]  # depthwise: in == out
    assert interpolate_layer(points(diag), 0.75, 0.75) == pytest.approx(3.0)
    first = [{"in_keep": 1.0, "out_keep": o, "ms": 2 * o} for o in (0.5, 1.0)]
    assert interpolate_layer(points(first), 1.0, 0.75) == pytest.approx(1.5)


def test_table_model_charges_run_overhead_once(vgg) -> None:
    from cpcdrl_deploy.measure.latency import TableLatencyModel

    a, groups = vgg
    rows = [
        {
            "index": t,
            "points": [{"in_keep": 1.0, "out_keep": 1.0, "ms": 1.0}, {"in_keep": 0.5, "out_keep": 0.5, "ms": 0.5}],
        }
        for t in range(1, 15)
    ]
    tables = {"vgg16": {"layers": rows, "run_overhead_ms": 0.1}}
    lm = TableLatencyModel(typed(tables), typed(tables), 2e5, 2e5, rtt_ms=1.0)
    b = lm.predict("vgg16", plan_shape(a, groups, 4, [1.0] * 4))
    assert b.edge_ms == pytest.approx(0.1 + 4 * 0.9)
    assert b.cloud_ms == pytest.approx(0.1 + 10 * 0.9)
    assert b.transfer_ms == pytest.approx(1000 * 128 * 8 * 8 * 4 / 2e5 + 1.0)
    with pytest.raises(CpcdrlError, match="no table for mobilenet"):
        lm.predict("mobilenet", plan_shape(a, groups, 4, [1.0] * 4))


def test_table_model_takes_the_overhead_in_the_statistic_it_sums(vgg) -> None:
    # per-run medians must be corrected with the median overhead, not the sustained mean
    # (a quota-throttled device's sustained overhead is several times its median)
    import dataclasses

    from cpcdrl_deploy.measure.latency import TableLatencyModel

    a, groups = vgg
    pt = {"in_keep": 1.0, "out_keep": 1.0, "ms": 2.0, "median_ms": 0.5}
    rows = [{"index": t, "points": [pt]} for t in range(1, 15)]
    tables = {"vgg16": {"layers": rows, "run_overhead_ms": 0.2, "run_overhead": {"ms": 0.2, "median_ms": 0.05}}}
    lm = TableLatencyModel(typed(tables), typed(tables), 2e5, 2e5)
    shape = plan_shape(a, groups, 4, [1.0] * 4)
    assert lm.predict("vgg16", shape).edge_ms == pytest.approx(0.2 + 4 * 1.8)
    med = dataclasses.replace(lm, stat="median_ms")
    assert med.predict("vgg16", shape).edge_ms == pytest.approx(0.05 + 4 * 0.45)


def test_table_model_takes_the_per_byte_run_overhead_off_each_layer(vgg) -> None:
    # a layer timed alone copies its input in and its output out; inside the model it does not
    from cpcdrl_deploy.measure.latency import TableLatencyModel
    from cpcdrl_deploy.measure.profiler import _slope

    a, groups = vgg
    # the overhead points: 0.1 ms fixed + 1e-6 ms per byte
    pts = [{"io_bytes": b, "ms": 0.1 + 1e-6 * b} for b in (8, 32_768, 262_144, 2_097_152)]
    assert _slope(pts, "ms") == pytest.approx(1e-6)
    assert (
        _slope(pts[:1], "ms") == 0.0 and _slope([{"io_bytes": 8, "ms": 2.0}, {"io_bytes": 16, "ms": 1.0}], "ms") == 0.0
    )  # never negative
    full = {"in_keep": 1.0, "out_keep": 1.0, "ms": 1.0, "io_bytes": 200_000}
    half = {"in_keep": 0.5, "out_keep": 0.5, "ms": 0.6, "io_bytes": 100_000}
    rows = [{"index": t, "points": [full, half]} for t in range(1, 15)]
    tables = {"vgg16": {"layers": rows, "run_overhead": {"ms": 0.1}, "run_overhead_per_io_byte": {"ms": 1e-6}}}
    lm = TableLatencyModel(typed(tables), typed(tables), 2e5, 2e5)
    assert lm.predict("vgg16", plan_shape(a, groups, 4, [1.0] * 4)).edge_ms == pytest.approx(
        0.1 + 4 * (1.0 - 0.1 - 0.2)
    )
    # the io bytes are interpolated at the plan's kept fractions like the times (0.75 keep: 150 KB, 0.8 ms)
    lm_pruned = lm.predict("vgg16", plan_shape(a, groups, 4, [0.75] * 4, round_to=1))
    assert lm_pruned.edge_ms < lm.predict("vgg16", plan_shape(a, groups, 4, [1.0] * 4)).edge_ms


def test_throttled_latencies_follow_cfs_bandwidth_control() -> None:
    from cpcdrl_deploy.measure.latency import throttled_latencies

    # a whole core: never throttled
    assert throttled_latencies(3.0, 0.0, 1.0, 4.0, requests=5) == [3.0] * 5
    # 0.25 CPU, 1 ms per 4 ms period, 0.5 ms runs back to back: two fit in each quota, the third stalls
    lat = throttled_latencies(0.5, 0.0, 0.25, 4.0, requests=6)
    assert lat[:3] == pytest.approx([0.5, 0.5, 3.5])
    # sustained, the device delivers exactly its share: mean latency = work / share
    for work in (0.3, 0.5, 2.0, 7.0):
        steady = throttled_latencies(work, 0.0, 0.25, 4.0, requests=400)[100:]
        assert sum(steady) / len(steady) == pytest.approx(work / 0.25, rel=0.02)
    # idle time between requests refills the quota: a run that fits in it is never throttled
    assert max(throttled_latencies(0.8, 4.0, 0.25, 4.0, requests=50)) == pytest.approx(0.8)
    # a 1 ms quota enforced at 4 ms ticks lets 4 ms bursts through, then stalls 12 ms
    lat = throttled_latencies(1.0, 0.0, 0.25, 4.0, tick_ms=4.0, requests=8)
    assert lat[:5] == pytest.approx([1.0, 1.0, 1.0, 1.0, 13.0])
    steady = throttled_latencies(1.0, 0.0, 0.25, 4.0, tick_ms=4.0, requests=400)[100:]
    assert sum(steady) / len(steady) == pytest.approx(4.0, rel=0.02)  # still the share, in coarser bursts
    with pytest.raises(ValueError):
        throttled_latencies(1.0, 0.0, 0.0, 4.0)


def test_table_model_anchors_each_side_to_its_whole_timing(vgg) -> None:
    # measured head at the cut x (table sum of the plan / table sum unpruned); the same for the tail
    import dataclasses

    from cpcdrl_deploy.measure.latency import TableLatencyModel

    a, groups = vgg
    rows = [
        {
            "index": t,
            "points": [{"in_keep": 1.0, "out_keep": 1.0, "ms": 1.0}, {"in_keep": 0.5, "out_keep": 0.5, "ms": 0.5}],
        }
        for t in range(1, 15)
    ]
    tables = {
        "vgg16": {
            "layers": rows,
            "run_overhead_ms": 0.0,
            "heads": [{"cut": 4, "ms": 5.0}],
            "tails": [{"cut": 4, "ms": 8.0}],
        }
    }
    lm = TableLatencyModel(typed(tables), typed(tables), 2e5, 2e5)
    b = lm.predict("vgg16", plan_shape(a, groups, 4, [1.0] * 4))
    assert b.edge_ms == pytest.approx(5.0) and b.cloud_ms == pytest.approx(8.0)  # unpruned: the measured head and tail
    pruned = plan_shape(a, groups, 4, [0.5] * 4, round_to=1)
    plain = dataclasses.replace(lm, anchor=False).predict("vgg16", pruned)
    assert plain.edge_ms == pytest.approx(4 * 0.5)  # the sums alone (compare checks these)
    assert lm.predict("vgg16", pruned).edge_ms == pytest.approx(5.0 * (4 * 0.5) / (4 * 1.0))
    # the tail's first layer sees the pruned cut tensor (in 0.5, out 1.0): interpolated along the diagonal here, 0.5 ms
    assert lm.predict("vgg16", pruned).cloud_ms == pytest.approx(8.0 * plain.cloud_ms / 10.0)
    # a cut with no whole timing (older profiles): the plain sums
    assert lm.predict("vgg16", plan_shape(a, groups, 6, [1.0] * 6)).edge_ms == pytest.approx(6.0)
    assert "anchored" in lm.describe() and "plain sums" in dataclasses.replace(lm, anchor=False).describe()


def test_table_model_interpolates_between_uniformly_pruned_whole_heads(vgg) -> None:
    # heads timed unpruned (5 ms, tables 4) and at keep 0.5 (3 ms, tables 2): a pruned head costs more than
    # the plain ratio says (a fixed part that pruning does not shrink); plans between them interpolate
    from cpcdrl_deploy.measure.latency import TableLatencyModel, anchored

    a, groups = vgg
    rows = [
        {
            "index": t,
            "points": [{"in_keep": 1.0, "out_keep": 1.0, "ms": 1.0}, {"in_keep": 0.5, "out_keep": 0.5, "ms": 0.5}],
        }
        for t in range(1, 15)
    ]
    half = plan_shape(a, groups, 4, [0.5] * 4, round_to=1)
    pruned_head = {
        "cut": 4,
        "keep": 0.5,
        "in_keep": list(half.in_keep[:4]),
        "out_keep": list(half.out_keep[:4]),
        "ms": 3.0,
    }
    tables = {
        "vgg16": {
            "layers": rows,
            "run_overhead_ms": 0.0,
            "heads": [{"cut": 4, "ms": 5.0}],
            "pruned_heads": [pruned_head],
        }
    }
    lm = TableLatencyModel(typed(tables), typed(tables), 2e5, 2e5)
    assert lm.predict("vgg16", half).edge_ms == pytest.approx(3.0)  # the timed pruned head itself, not 5 x 2/4 = 2.5
    assert lm.predict("vgg16", plan_shape(a, groups, 4, [1.0] * 4)).edge_ms == pytest.approx(5.0)
    three_q = plan_shape(a, groups, 4, [0.75] * 4, round_to=1)  # tables: 4 x 0.75 = 3, halfway between 2 and 4
    assert lm.predict("vgg16", three_q).edge_ms == pytest.approx(4.0)
    # below the smallest timed head: that head's measured / table ratio
    assert lm.predict("vgg16", plan_shape(a, groups, 4, [0.25] * 4, round_to=1)).edge_ms == pytest.approx(
        1.0 * 3.0 / 2.0
    )
    # a pruned head at another cut is not used
    assert lm.predict("vgg16", plan_shape(a, groups, 6, [1.0] * 6)).edge_ms == pytest.approx(6.0)
    assert anchored(2.0, []) == 2.0 and anchored(2.0, [(4.0, 5.0)]) == pytest.approx(2.5)


def test_blocked_channels_cost_a_whole_block() -> None:
    from cpcdrl_deploy.measure.latency import blocked_keep

    assert blocked_keep(56 / 64, 64, 16) == pytest.approx(1.0)  # 56 channels run as 64 with blocks of 16
    assert blocked_keep(48 / 64, 64, 16) == pytest.approx(0.75)  # a whole number of blocks: unchanged
    assert blocked_keep(56 / 64, 64, 8) == pytest.approx(56 / 64)
    assert blocked_keep(0.3, 64, 1) == 0.3 and blocked_keep(0.01, 3, 16) == 1.0  # at most all channels


def test_table_model_prices_conv_channels_in_blocks_where_the_host_has_them(vgg) -> None:
    from cpcdrl_deploy.measure.latency import TableLatencyModel

    a, groups = vgg
    rows = [
        {
            "index": L.index,
            "kind": L.kind,
            "in_channels": L.in_channels,
            "out_channels": L.out_channels,
            "points": [{"in_keep": k, "out_keep": k, "ms": k} for k in (0.25, 0.5, 0.75, 1.0)],
        }
        for L in a.layers
    ]
    shape = plan_shape(a, groups, 2, [0.875, 0.875])  # layer 1: 3 -> 56, layer 2: 56 -> 56 of 64
    plain_t, blocked_t = {"vgg16": {"layers": rows}}, {"vgg16": {"layers": rows, "channel_block": 16}}
    plain = TableLatencyModel(typed(plain_t), typed(plain_t), 2e5, 2e5).predict("vgg16", shape).edge_ms
    blocked = TableLatencyModel(typed(blocked_t), typed(blocked_t), 2e5, 2e5).predict("vgg16", shape).edge_ms
    assert plain == pytest.approx(0.875 + 0.875)  # diagonal grid: each layer at its out keep
    assert blocked == pytest.approx(1.0 + 1.0)  # 56 channels cost 64


def test_whole_timings_are_bounded_by_every_larger_model() -> None:
    # a slow spell only adds time: a head is no slower than a later head, nor a pruned head than a less pruned one
    from cpcdrl_deploy.measure.latency import whole_timings

    t = {
        "heads": [{"cut": 1, "ms": 1.0}, {"cut": 2, "ms": 9.0}, {"cut": 3, "ms": 4.0}],
        "pruned_heads": [
            {"cut": 1, "keep": 0.5, "ms": 2.0, "in_keep": [], "out_keep": []},
            {"cut": 3, "keep": 0.5, "ms": 5.0, "in_keep": [], "out_keep": []},
            {"cut": 2, "keep": 0.5, "ms": 1.5, "in_keep": [], "out_keep": []},
        ],
        "tails": [{"cut": 0, "ms": 6.0}, {"cut": 1, "ms": 8.0}, {"cut": 2, "ms": 3.0}],
    }
    t = typed({"m": t})["m"]
    h = whole_timings(t, "heads")
    assert h[(2, 1.0)] == 4.0 and h[(1, 1.0)] == 1.0  # cut 2 bounded by cut 3
    assert (
        h[(3, 0.5)] == 4.0 and h[(1, 0.5)] == 1.0 and h[(2, 0.5)] == 1.5
    )  # by the unpruned head, then by the later cut
    tl = whole_timings(t, "tails")
    assert tl == {(0, 1.0): 6.0, (1, 1.0): 6.0, (2, 1.0): 3.0}  # the tail at cut 1 is part of the one at cut 0
    assert whole_timings(typed({"m": {}})["m"], "heads") == {}


def test_table_model_anchors_a_waiting_side_to_its_as_served_timing(vgg) -> None:
    # whole models timed back to back (ms) and after idle (cold_median_ms): the cloud always waits for the
    # request, the edge only when the plan offloads; an all-on-edge plan runs back to back
    import dataclasses

    from cpcdrl_deploy.measure.latency import TableLatencyModel

    a, groups = vgg
    n = a.n_layers
    rows = [
        {
            "index": t,
            "points": [{"in_keep": 1.0, "out_keep": 1.0, "ms": 1.0}, {"in_keep": 0.5, "out_keep": 0.5, "ms": 0.5}],
        }
        for t in range(1, n + 1)
    ]
    heads = [{"cut": 4, "ms": 5.0, "cold_median_ms": 6.0}, {"cut": n, "ms": 20.0, "cold_median_ms": 30.0}]
    tables = {
        "vgg16": {
            "layers": rows,
            "run_overhead_ms": 0.0,
            "heads": heads,
            "tails": [{"cut": 4, "ms": 8.0, "cold_median_ms": 12.0}],
        }
    }
    lm = TableLatencyModel(typed(tables), typed(tables), 2e5, 2e5)
    split = lm.predict("vgg16", plan_shape(a, groups, 4, [1.0] * 4))
    assert split.edge_ms == pytest.approx(6.0) and split.cloud_ms == pytest.approx(12.0)
    assert lm.predict("vgg16", plan_shape(a, groups, n, [1.0] * n)).edge_ms == pytest.approx(
        20.0
    )  # all on the edge: back to back
    warm = dataclasses.replace(lm, cold=False)
    assert warm.predict("vgg16", plan_shape(a, groups, 4, [1.0] * 4)).cloud_ms == pytest.approx(8.0)
    assert "as served" in lm.describe() and "as served" not in warm.describe()
    # pruned plans are placed by the same anchors, as served: 6.0 x (tables 2 / 4)
    assert lm.predict("vgg16", plan_shape(a, groups, 4, [0.5] * 4, round_to=1)).edge_ms == pytest.approx(3.0)
    # one whole model without the as-served timing (an older, resumed profile): that side keeps the back-to-back ones
    old = {"vgg16": {**tables["vgg16"], "heads": [heads[0], {"cut": n, "ms": 20.0}]}}
    assert TableLatencyModel(typed(old), typed(old), 2e5, 2e5).predict(
        "vgg16", plan_shape(a, groups, 4, [1.0] * 4)
    ).edge_ms == pytest.approx(5.0)


def test_table_model_prices_a_depthwise_conv_off_its_fast_channel_counts() -> None:
    # a dw row with its misaligned timing: 4x (less the run overhead) at a count that is not a multiple of
    # the host's dw_alignment, the interpolated time at an aligned one
    from cpcdrl_deploy.compress.pruning import PlanShape
    from cpcdrl_deploy.measure.latency import TableLatencyModel, misaligned_factor

    pts = [{"in_keep": k, "out_keep": k, "ms": 0.1 + 1.0 * k} for k in (0.25, 0.5, 0.75, 1.0)]
    row = {
        "index": 1,
        "kind": "dwconv",
        "in_channels": 64,
        "out_channels": 64,
        "points": pts,
        "misaligned": {"channels": 63, "ms": 4.1},
    }
    assert (
        misaligned_factor(LayerRow.model_validate(_row(row) | {"points": points(pts)}), 0.1) == pytest.approx(4.0)
        and misaligned_factor(LayerRow.model_validate(_row(row) | {"points": points(pts), "misaligned": None}), 0.1)
        == 1.0
    )
    tab = {"layers": [row], "run_overhead_ms": 0.1, "dw_alignment": 4}
    lm = TableLatencyModel(typed({"m": tab}), typed({"m": tab}), 1e6, 1e6)

    def edge(lm: TableLatencyModel, keep: float) -> float:
        return lm.predict(
            "m", PlanShape(cut=1, in_keep=(keep,), out_keep=(keep,), layer_macs=(1,), cut_bytes=0, result_bytes=0)
        ).edge_ms

    assert edge(lm, 60 / 64) == pytest.approx(0.1 + 60 / 64)  # a multiple of 4
    assert edge(lm, 62 / 64) == pytest.approx(0.1 + 4.0 * 62 / 64)  # not: 4x the interpolated time
    no_slow_path = TableLatencyModel(typed({"m": {**tab, "dw_alignment": 1}}), typed({"m": tab}), 1e6, 1e6)
    assert edge(no_slow_path, 62 / 64) == pytest.approx(0.1 + 62 / 64)


def test_points_at_one_keep_are_averaged_not_divided_by_zero() -> None:
    """A coupled layer whose grid keeps round to one channel count has several points at one x (the emulated Pi's
    MobileNetV3 profile had them): they are one point, their mean."""
    from cpcdrl_deploy.measure.latency import _lerp

    assert _lerp([0.5, 0.5, 1.0], [1.0, 3.0, 4.0], 0.75) == pytest.approx(3.0)
    assert _lerp([1.0, 1.0], [2.0, 4.0], 0.5) == pytest.approx(3.0)
