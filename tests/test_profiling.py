"""Link measurement, with a fake device whose transfers take a known time."""

import json

import pytest

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.measure.profiler import measure_link, timing_file


class FakeLink:
    name = "fake"

    def __init__(self, up_bps: float, down_bps: float, setup_s: float) -> None:
        self.up_bps, self.down_bps, self.setup_s = up_bps, down_bps, setup_s
        self.calls = 0

    def echo_rtt_ms(self) -> float:
        return 0.5

    def stream_s(self, n_bytes: int, upload: bool) -> float:
        self.calls += 1
        # every other try is slowed down by a stall, as on a throttled device: the faster one counts
        stall = 0.7 if self.calls % 2 else 0.0
        return self.setup_s + stall + n_bytes / (self.up_bps if upload else self.down_bps)


def test_measure_link_recovers_each_direction_despite_fixed_cost_and_stalls() -> None:
    lp = measure_link(FakeLink(150_000, 400_000, setup_s=0.3))
    assert lp.uplink_bytes_per_s == pytest.approx(150_000, rel=1e-6)
    assert lp.downlink_bytes_per_s == pytest.approx(400_000, rel=1e-6)
    assert lp.rtt_ms == 0.5


def test_measure_link_needs_ssh() -> None:
    class Local:
        name = "local"

    with pytest.raises(CpcdrlError, match="only be measured over SSH"):
        measure_link(Local())


def test_channel_block_is_read_off_the_step_in_conv_time() -> None:
    from cpcdrl_deploy.measure.profiler import BLOCK_PROBE_CHANNELS, channel_block

    def times(block: int) -> dict[int, float]:  # 0.05 ms per run plus 0.01 ms per channel, in whole blocks
        return {c: 0.05 + 0.01 * (-(-c // block) * block) for c in BLOCK_PROBE_CHANNELS}

    assert [channel_block(times(b)) for b in (1, 4, 8, 16, 32)] == [1, 4, 8, 16, 32]
    noisy = {c: t * (1.03 if c % 2 else 0.97) for c, t in times(16).items()}  # +-3 % per timing
    assert channel_block(noisy) == 16


def test_profile_jobs_include_pruned_heads_and_the_block_probe(tmp_path) -> None:
    from cpcdrl_deploy.measure.profiler import BLOCK_PROBE_CHANNELS, _table, build_jobs

    grid = (0.5, 1.0)
    jobs, analysis = build_jobs("tinyvgg", grid, tmp_path, lambda s: None)
    pruned = [j for j in jobs if j["kind"] == "pruned_head"]
    cuts = [p.index for p in analysis.points if p.cuttable and p.index > 0]
    assert sorted(j["cut"] for j in pruned) == cuts and all(j["keep"] == 0.5 for j in pruned)
    assert all(len(j["in_keep"]) == j["cut"] and min(j["out_keep"]) < 1.0 for j in pruned)
    blocks = [i for i, j in enumerate(jobs) if j["kind"] == "block"]
    assert sorted(jobs[i]["channels"] for i in blocks) == sorted(BLOCK_PROBE_CHANNELS * 3)
    assert (
        blocks[0] == 0 and blocks[-1] == len(jobs) - 1 and any(9 < i < len(jobs) - 10 for i in blocks)
    )  # first, middle, last
    assert all((tmp_path / j["file"]).stat().st_size > 0 for j in jobs)
    # fake timings: every model 1 ms, the block probe with blocks of 8
    done = {j["id"]: {"mean_ms": 1.0, "median_ms": 1.0, "p10_ms": 1.0, "p90_ms": 1.0} for j in jobs}
    for j in jobs:
        if j["kind"] == "block":  # blocks of 8; the first pass ran in a slow spell from 56 channels on
            slow = 1.3 if j["id"].endswith("_p0") and j["channels"] >= 56 else 1.0
            done[j["id"]]["p10_ms"] = slow * (0.1 + 0.01 * (-(-j["channels"] // 8) * 8))
    t = _table(jobs, done, analysis, grid, 1)
    assert t.channel_block == 8 and len(t.pruned_heads) == len(cuts)
    assert t.layers[0].kind == analysis.layers[0].kind and t.layers[0].out_channels == analysis.layers[0].out_channels


def _round(mean: float) -> dict:
    return {
        "mean_ms": mean,
        "median_ms": mean - 0.1,
        "p10_ms": mean - 0.2,
        "p90_ms": mean + 0.3,
        "min_ms": mean - 0.3,
        "repeats": 5,
    }


def test_profiler_reports_the_median_round_not_the_fastest() -> None:
    from cpcdrl_deploy.ondevice.timer import middle_round

    # four rounds, one in a slow spell and one unusually fast: the two middle ones, averaged
    even = middle_round([_round(9.0), _round(5.0), _round(6.0), _round(30.0)])
    assert even["mean_ms"] == pytest.approx(7.5) and even["p90_ms"] == pytest.approx(7.8) and even["repeats"] == 10
    odd = middle_round([_round(3.0), _round(1.0), _round(2.0)])
    assert odd["mean_ms"] == 2.0 and odd["p10_ms"] == pytest.approx(1.8) and odd["repeats"] == 5
    assert middle_round([_round(4.0)])["mean_ms"] == 4.0


def test_time_jobs_keeps_every_rounds_mean(tmp_path) -> None:
    import torch.nn as nn

    from cpcdrl_deploy.ondevice.timer import time_jobs

    (tmp_path / "relu.onnx.gz").write_bytes(timing_file(nn.ReLU(), (8, 4, 4)))
    (res,) = time_jobs(
        [{"id": "relu", "file": "relu.onnx.gz", "input_shape": [1, 8, 4, 4]}], str(tmp_path), 1, 1, 8, 0.02, rounds=4
    )
    assert res["id"] == "relu" and len(res["round_means_ms"]) == 4
    ranked = sorted(res["round_means_ms"])
    assert res["mean_ms"] == pytest.approx((ranked[1] + ranked[2]) / 2)


def test_time_on_device_returns_results_by_id_and_fails_in_one_line(tmp_path) -> None:
    import torch.nn as nn

    from cpcdrl_deploy.devices.remote import connect
    from cpcdrl_deploy.measure.profiler import PROFILER, time_on_device

    dev = connect("local")
    remote = dev.mkdtemp()
    try:
        dev.put(PROFILER, f"{remote}/timer.py")
        (tmp_path / "relu.onnx.gz").write_bytes(timing_file(nn.ReLU(), (8, 4, 4)))
        dev.put(tmp_path / "relu.onnx.gz", f"{remote}/relu.onnx.gz")
        job = tmp_path / "job.json"
        job.write_text(json.dumps([{"id": "relu", "file": "relu.onnx.gz", "input_shape": [1, 8, 4, 4]}]))
        timed = time_on_device(dev, remote, job, "--warmup 1 --repeats 4 --rounds 2 --min-time-ms 10", timeout=120)
        assert list(timed) == ["relu"] and timed["relu"]["mean_ms"] > 0 and len(timed["relu"]["round_means_ms"]) == 2
        job.write_text(json.dumps([{"id": "gone", "file": "missing.onnx.gz", "input_shape": [1, 8, 4, 4]}]))
        with pytest.raises(CpcdrlError, match=r"^local: profiler failed: [^\n]+$"):
            time_on_device(dev, remote, job, "--repeats 2", timeout=120)
    finally:
        dev.remove(remote)


def test_time_jobs_times_whole_models_after_idle_when_asked(tmp_path, monkeypatch) -> None:
    # a job with cold_gap_ms also gets COLD_RUNS_PER_ROUND runs per round, each after that much sleep
    import torch.nn as nn

    from cpcdrl_deploy.ondevice import timer

    sleeps: list[float] = []
    real_sleep = timer.time.sleep
    monkeypatch.setattr(timer.time, "sleep", lambda s: (sleeps.append(s), real_sleep(s)))
    (tmp_path / "relu.onnx.gz").write_bytes(timing_file(nn.ReLU(), (8, 4, 4)))
    jobs = [
        {"id": "warm", "file": "relu.onnx.gz", "input_shape": [1, 8, 4, 4]},
        {"id": "cold", "file": "relu.onnx.gz", "input_shape": [1, 8, 4, 4], "cold_gap_ms": 3.0},
    ]
    warm, cold = timer.time_jobs(jobs, str(tmp_path), 1, 1, 8, 0.02, rounds=3)
    assert "cold_median_ms" not in warm
    assert (
        cold["cold_runs"] == 3 * timer.COLD_RUNS_PER_ROUND and cold["cold_gap_ms"] == 3.0 and cold["cold_median_ms"] > 0
    )
    assert sleeps == [0.003] * cold["cold_runs"]


def test_table_keeps_the_as_served_timing_of_whole_models() -> None:
    from cpcdrl_deploy.measure.profiler import _table
    from cpcdrl_deploy.models.graph import analyze
    from cpcdrl_deploy.models.zoo import build_model

    a = analyze(build_model("tinyvgg"), 32, "tinyvgg")
    stats = {"mean_ms": 1.0, "median_ms": 1.0, "p10_ms": 0.9, "p90_ms": 1.1}
    jobs = [{"id": "head2", "kind": "head", "cut": 2}, {"id": "tail2", "kind": "tail", "cut": 2}]
    done = {"head2": {**stats, "cold_median_ms": 1.4, "cold_gap_ms": 20.0}, "tail2": stats}
    t = _table(jobs, done, a, (1.0,), 1)
    assert t.heads[0].cold_median_ms == 1.4 and t.heads[0].cold_gap_ms == 20.0
    assert t.tails[0].cold_median_ms is None


def test_dw_alignment_is_the_smallest_multiple_whose_counts_are_all_fast() -> None:
    from cpcdrl_deploy.measure.profiler import dw_alignment

    # this host's kind of figures: odd and 2-aligned counts 4x per channel, multiples of 4 at full speed
    assert dw_alignment({64: 1.0, 63: 4.1, 62: 3.6, 60: 0.95, 56: 0.9, 48: 0.7}) == 4
    assert dw_alignment({64: 1.0, 63: 1.05, 62: 0.98, 60: 0.97, 56: 0.9, 48: 0.8}) == 1  # no slow path
    assert dw_alignment({64: 1.0, 63: 4.0, 62: 3.9, 60: 3.8, 56: 3.5, 48: 0.75}) == 16


def test_misaligned_job_times_a_depthwise_layer_at_one_channel_fewer(tmp_path) -> None:
    import gzip

    import onnx

    from cpcdrl_deploy.compress.pruning import channel_groups
    from cpcdrl_deploy.measure.profiler import _misaligned_job
    from cpcdrl_deploy.models.graph import analyze
    from cpcdrl_deploy.models.zoo import build_model

    m = build_model("mobilenet")
    a = analyze(m, 32, "mobilenet")
    t = next(i for i, L in enumerate(a.layers, 1) if L.kind == "dwconv")
    job = _misaligned_job(m, a, channel_groups(m, a), t, tmp_path, ".onnx.gz", "onnxruntime")
    c = a.layers[t - 1].out_channels - 1
    assert job["kind"] == "misaligned" and job["layer"] == t and job["channels"] == c and job["input_shape"][1] == c
    g = onnx.load_from_string(gzip.decompress((tmp_path / job["file"]).read_bytes())).graph
    conv_w = next(i for i in g.initializer if len(i.dims) == 4)
    assert conv_w.dims[0] == c  # the depthwise conv itself has the odd count


def test_pooled_timing_keeps_the_attempt_nearest_the_median_of_all_passes() -> None:
    from cpcdrl_deploy.measure.profiler import _disturbed, _pooled

    first = {"mean_ms": 3.5, "p90_ms": 6.0, "round_means_ms": [1.0, 1.1, 5.9, 6.0]}  # two passes in a slow spell
    again = {"mean_ms": 1.05, "p90_ms": 1.2, "round_means_ms": [1.0, 1.1, 1.0, 1.1, 1.0, 1.1, 1.2, 1.0]}
    assert _disturbed(first) and not _disturbed(again) and not _disturbed({"mean_ms": 1.0})
    r = _pooled([first, again])
    assert r["mean_ms"] == 1.05 and r["p90_ms"] == 1.2 and r["retimed"] == 1 and len(r["round_means_ms"]) == 12
    # a retime that lands wholly in a spell is outvoted only if the other passes agree: here they are 6 slow of 12
    slow = {"mean_ms": 6.0, "round_means_ms": [6.0] * 8}
    assert _pooled([first, slow])["mean_ms"] == 6.0
    assert _pooled([again]) is again


def test_spread_jobs_times_whole_models_at_several_moments_in_one_seeded_order() -> None:
    from cpcdrl_deploy.measure.profiler import PASS_MARK, _interleave, _spread_jobs

    jobs = [{"id": f"L{i}", "kind": "layer"} for i in range(40)]
    jobs += [{"id": f"H{c}", "kind": "head"} for c in range(4)] + [{"id": "T0", "kind": "tail"}]
    jobs += [{"id": "P1", "kind": "pruned_head"}]
    out = _spread_jobs(jobs, 3)
    ids = [j["id"] for j in out]
    assert len(ids) == len(set(ids)) == 40 + 6 * 3
    assert {f"H2{PASS_MARK}1", f"H2{PASS_MARK}2", f"P1{PASS_MARK}2"} <= set(ids) and f"L0{PASS_MARK}1" not in ids
    assert ids != [j["id"] for j in jobs][: len(ids)]  # shuffled: the whole models no longer come last together
    assert ids == [j["id"] for j in _spread_jobs(jobs, 3)]  # the same order on a resume
    # two runtimes' copies of one unit stay side by side
    two = _interleave([_spread_jobs([dict(j, id=f"{rt}:{j['id']}") for j in jobs], 3) for rt in ("a", "b")])
    assert all(x["id"].split(":")[1] == y["id"].split(":")[1] for x, y in zip(two[::2], two[1::2], strict=True))


def test_whole_model_passes_are_pooled_round_by_round() -> None:
    from cpcdrl_deploy.measure.profiler import PASS_MARK, _passes_pooled

    fast = {"mean_ms": 6.0, "round_means_ms": [6.0, 6.1], "cold_median_ms": 7.0}
    slow = {"mean_ms": 9.9, "round_means_ms": [9.8, 10.0], "cold_median_ms": 12.0}  # one pass in a slow spell
    mid = {"mean_ms": 6.3, "round_means_ms": [6.2, 6.4], "cold_median_ms": 7.4, "retimed": 1}
    done = {"H": slow, f"H{PASS_MARK}1": fast, f"H{PASS_MARK}2": mid, "L": fast}
    r = _passes_pooled(done, "H")
    assert r["mean_ms"] == 6.3 and r["passes"] == 3 and len(r["round_means_ms"]) == 6
    assert r["cold_median_ms"] == 7.4 and r["retimed"] == 1
    assert _passes_pooled(done, "L") is fast


@pytest.mark.slow
def test_profile_times_a_model_again_when_its_passes_disagree(tmp_path, monkeypatch) -> None:
    """A model whose passes spread over more than RETIME_SPREAD is timed alone again, with twice the passes."""
    from cpcdrl_deploy.devices.remote import LocalDevice, connect
    from cpcdrl_deploy.measure import profiler as profiling

    real_run = LocalDevice.run
    calls: list[str] = []

    def spelled(self, command, timeout=600.0, stdin=None):
        rc, out, err = real_run(self, command, timeout, stdin)
        if " time " in command:
            calls.append(command)
            # this busy host's own spread is not under test: every pass agrees, except that in the first
            # batch the first layer's last pass falls in a spell 10x slower
            rs = [json.loads(line) for line in out.strip().splitlines()]
            for r in rs:
                r["round_means_ms"] = [r["mean_ms"]] * len(r["round_means_ms"])
                if len(calls) == 1 and r["id"] == "L1_i1.0000_o1.0000":
                    r["round_means_ms"][-1] *= 10
            out = "".join(json.dumps(r) + "\n" for r in rs)
        return rc, out, err

    monkeypatch.setattr(LocalDevice, "run", spelled)
    logs: list[str] = []
    prof = profiling.profile_host(
        connect("local"),
        ["tinyvgg"],
        tmp_path / "p.json",
        (1.0,),
        warmup=1,
        repeats=4,
        measure_link_too=False,
        rounds=2,
        window_ms=5,
        log=logs.append,
        whole_passes=1,  # one batch: the retime is then the second call
    )
    assert len(calls) == 2 and "--rounds 2 " in calls[0] and "--rounds 4 " in calls[1]
    assert any("timing 1 models again" in line for line in logs)
    assert not any("still disagree" in line for line in logs)  # the second timing's passes agreed
    t = prof.tables["tinyvgg"]
    entries = [p for L in t.layers for p in L.points] + t.heads + t.tails + t.pruned_heads
    retimed = [e for e in entries if e.retimed]
    assert retimed == [t.layers[0].points[0]] and retimed[0].retimed == 1 and len(retimed[0].round_means_ms) == 2 + 4
    assert prof.host["retime_spread"] == profiling.RETIME_SPREAD
    # a device on this host: the table says what this host's CPUs did while the model was timed
    hl = t.host_load
    assert (
        hl["seconds"] > 0
        and len(hl["busy_pct"]) == len(hl["steal_pct"]) >= 1
        and all(0.0 <= x <= 100.0 for x in hl["steal_pct"])
    )


def test_build_jobs_writes_a_model_built_earlier_in_the_run_without_exporting_it_again(tmp_path, monkeypatch) -> None:
    from cpcdrl_deploy.measure import profiler

    (tmp_path / "a").mkdir()
    first, a1 = profiler.build_jobs("tinyvgg", (0.75, 1.0), tmp_path / "a", lambda s: None)
    monkeypatch.setattr(profiler, "timing_file", lambda *a, **k: pytest.fail("exported again"))
    logs: list[str] = []
    (tmp_path / "b").mkdir()
    again, a2 = profiler.build_jobs("tinyvgg", (0.75, 1.0), tmp_path / "b", logs.append)
    assert again == first and a2 is a1 and again is not first  # the caller may change its copy
    assert all((tmp_path / "b" / j["file"]).read_bytes() == (tmp_path / "a" / j["file"]).read_bytes() for j in first)
    assert any("built earlier" in line for line in logs)
    with pytest.raises(pytest.fail.Exception, match="exported again"):  # another grid is another set of models
        profiler.build_jobs("tinyvgg", (0.6, 1.0), tmp_path / "b", lambda s: None)
