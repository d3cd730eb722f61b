"""Plan sets: curves, the envelope and its thresholds, hysteresis, and ``optimize --bandwidth-range`` end to end."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cpcdrl_deploy.cli import app
from cpcdrl_deploy.search.planset import (
    Curve,
    PlanSet,
    SetMember,
    bucket_rates,
    crossing,
    envelope,
    load_set,
    make_bands,
)

runner = CliRunner()
EDGE = Curve(30.0, 0.0)  # all on the device: the link does not matter
SPLIT = Curve(8.0, 6000.0)  # a pruned head sends 6 KB
CLOUD = Curve(4.0, 12000.0)  # the image


def test_a_curve_through_two_priced_points_is_exact_between_them() -> None:
    c = Curve.through(50e3, SPLIT.at(50e3), 5e6, SPLIT.at(5e6))
    assert c.fixed_ms == pytest.approx(8.0) and c.link_bytes == pytest.approx(6000.0)
    assert float(c.at(400e3)) == pytest.approx(float(SPLIT.at(400e3)))


def test_thresholds_sit_where_neighbouring_curves_cross() -> None:
    x = crossing(EDGE, SPLIT)
    assert x is not None and float(EDGE.at(x)) == pytest.approx(float(SPLIT.at(x)))
    assert crossing(EDGE, Curve(40.0, 10.0)) is None  # slower everywhere: never crosses
    bands = make_bands({"e": EDGE, "s": SPLIT, "c": CLOUD}, ["e", "s", "c"])
    assert [b.plan for b in bands] == ["e", "s", "c"]
    assert bands[0].low_bytes_per_s is None and bands[-1].high_bytes_per_s is None
    assert bands[0].high_bytes_per_s == bands[1].low_bytes_per_s == pytest.approx(x)
    assert bands[1].high_bytes_per_s == pytest.approx(crossing(SPLIT, CLOUD))


def test_the_envelope_keeps_plans_worth_a_switch_slow_link_first() -> None:
    curves = {"cloud": CLOUD, "edge": EDGE, "split": SPLIT, "never": Curve(50.0, 20000.0)}
    assert envelope(curves, 50e3, 5e6, tolerance=0.0) == ["edge", "split", "cloud"]
    # two plans within 0.4 % of each other wherever either is lowest: one switch is not worth it
    near = {"edge": EDGE, "cloud": CLOUD, "almost": Curve(29.9, 10.0)}
    assert envelope(near, 50e3, 5e6, tolerance=0.0) == ["edge", "almost", "cloud"]
    kept = envelope(near, 50e3, 5e6, tolerance=0.03)
    assert len(kept) == 2 and kept[-1] == "cloud"


def _set(h: float = 0.2) -> PlanSet:
    curves = {"b0": EDGE, "b1": SPLIT, "b2": CLOUD}
    return PlanSet(
        model="m",
        method="cpcdrl",
        range_bytes_per_s=(50e3, 5e6),
        searched_bytes_per_s=[1e5, 1e6],
        hysteresis=h,
        tolerance=0.03,
        a0_test=80.0,
        latency_model="test",
        members=[
            SetMember(name=k, plan=f"{k}.json", cut=i, n_layers=3, fixed_ms=c.fixed_ms, link_bytes=c.link_bytes)
            for i, (k, c) in enumerate(curves.items())
        ],
        bands=make_bands(curves, list(curves)),
    )


def test_a_runner_switches_only_past_the_hysteresis() -> None:
    ps = _set(0.2)
    t = ps.bands[0].high_bytes_per_s
    assert t is not None and ps.band_at(t * 0.99) == 0 and ps.band_at(t * 1.01) == 1
    assert ps.switch(0, t * 1.15) == 0 and ps.switch(0, t * 1.25) == 1  # up: past t * 1.2
    assert ps.switch(1, t / 1.15) == 1 and ps.switch(1, t / 1.25) == 0  # down: below t / 1.2
    assert ps.switch(0, 1e9) == 2 and ps.switch(2, 1.0) == 0  # a jump crosses every band at once
    assert _set(0.0).switch(0, t * 1.001) == 1


def test_bucket_rates_are_geometric_centres() -> None:
    r = bucket_rates(50e3, 5e6, 2)
    assert r == pytest.approx([50e3 * 10**0.5, 5e5 * 10**0.5])
    with pytest.raises(Exception, match="LOW < HIGH"):
        bucket_rates(5e6, 50e3, 4)


def test_a_cached_plan_is_priced_by_the_latency_model_of_now() -> None:
    import dataclasses

    from cpcdrl_deploy.search.optimize import OptimizeRequest, prepare, set_link_rate

    req = OptimizeRequest(
        "tinysplit", checkpoint=_builtin_ckpt(), data="builtin", max_accuracy_loss=2.0, val_size=100, calib_size=16
    )
    s = prepare(req)
    slow, fast = set_link_rate(s, 50e3), set_link_rate(s, 5e6)
    a = slow.evaluator.evaluate(2, [0.5, 0.5])
    b = fast.evaluator.evaluate(2, [0.5, 0.5])  # a hit: same accuracy, priced at the new rate
    assert fast.evaluator.timers.cache_hits == 1 and a.accuracy == b.accuracy
    assert b.latency.transfer_ms < a.latency.transfer_ms / 50
    assert dataclasses.replace(a, latency=b.latency) == b


def _builtin_ckpt():
    from cpcdrl_deploy.models.zoo import resolve_checkpoint

    return resolve_checkpoint("tinysplit", None, required=True)


ARGS = ["optimize", "--bandwidth-range", "50KB/s:5MB/s", "--max-accuracy-loss", "2", "--episodes", "8"]


@pytest.fixture(scope="module")
def made_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("set")
    res = runner.invoke(app, [*ARGS, "--cache", str(d / "c"), "--out", str(d / "plans.json"), "--format", "json"])
    assert res.exit_code == 0, res.output
    return d, json.loads(res.stdout)


@pytest.mark.slow
def test_optimize_a_plan_set_over_a_range(made_set) -> None:
    tmp_path, doc = made_set
    out = tmp_path / "plans.json"
    ps, plans = load_set(out)
    assert doc["kind"] == "cpcdrl-planset" and len(ps.searched_bytes_per_s) == 4 and (tmp_path / "plans.png").stat()
    assert [b.plan for b in ps.bands] == [m.name for m in ps.members] and len(ps.members) >= 2
    cuts = [m.cut for m in ps.members]
    # slow link: everything on the device; fast link: more on the cloud (the built-in model's image is small)
    assert cuts[0] == ps.members[0].n_layers and cuts == sorted(cuts, reverse=True)
    for m in ps.members:
        p = plans[m.name]
        assert p.cut == m.cut and p.weights is not None and (tmp_path / p.weights.file).exists()
        lo, hi = ps.range_bytes_per_s
        at = ps.bands[[b.plan for b in ps.bands].index(m.name)]
        mid = (max(at.low_bytes_per_s or lo, lo) * min(at.high_bytes_per_s or hi, hi)) ** 0.5
        assert p.profiles.bandwidth_bytes_per_s == pytest.approx(mid)  # priced where it is used
        assert p.latency_ms["total_ms"] == pytest.approx(float(m.curve().at(mid)), rel=1e-6)
        assert m.test_accuracy == p.accuracy.test and m.meets_a0_on_test is not None
    # each band's plan is the lowest of the set inside it
    for b in ps.bands:
        lo, hi = ps.range_bytes_per_s
        r = (max(b.low_bytes_per_s or lo, lo) * min(b.high_bytes_per_s or hi, hi)) ** 0.5
        pred = ps.predicted_ms(r)
        assert pred[b.plan] == min(pred.values())
    table = runner.invoke(app, [*ARGS, "--cache", str(tmp_path / "c")])
    assert table.exit_code == 0 and "| band (uplink) |" in table.output and "all on the edge" in table.output


@pytest.mark.parametrize(
    "extra, why",
    [
        (["--bandwidth-range", "5MB/s"], "expected LOW:HIGH"),
        (["--bandwidth-range", "5MB/s:50KB/s"], "LOW < HIGH"),
        (["--bandwidth-range", "50KB/s:5MB/s", "--method", "edge-only"], "one --method of"),
        (["--bandwidth-range", "50KB/s:5MB/s", "--bandwidth", "1MB/s"], "not both"),
        (["--bandwidth-range", "50KB/s:5MB/s", "--hysteresis", "1.5"], "--hysteresis"),
    ],
)
def test_bad_ranges_are_one_line(extra, why, tmp_path) -> None:
    res = runner.invoke(app, ["optimize", "--max-accuracy-loss", "2", *extra, "--out", str(tmp_path / "p.json")])
    assert res.exit_code == 2 and why in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_set_exports_one_folder_per_plan_and_serves_every_tail_by_its_name(made_set, tmp_path) -> None:
    from cpcdrl_deploy.serving.server import make_server

    d, _ = made_set
    res = runner.invoke(app, ["export", str(d / "plans.json"), "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    ps, _ = load_set(d / "plans.json")
    assert (tmp_path / "e" / "planset.json").exists() and all(
        (tmp_path / "e" / m.name / "manifest.json").exists() for m in ps.members
    )
    httpd = make_server(tmp_path / "e", port=0)
    try:
        with_tail = [m.name for m in ps.members if m.cut < m.n_layers]
        assert sorted(httpd.cpcdrl_models) == sorted(with_tail) and with_tail
    finally:
        httpd.server_close()
