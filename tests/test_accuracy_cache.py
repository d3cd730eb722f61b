"""The persistent accuracy cache: shared across links, exact, and keyed by everything that changes a pruned model."""

from __future__ import annotations

import json
import shutil

import torch
from typer.testing import CliRunner

from cpcdrl_deploy.cli import app
from cpcdrl_deploy.search.accuracy_cache import AccuracyCache, CachedScore, cache_info, clear_cache
from cpcdrl_deploy.search.methods import SearchConfig
from cpcdrl_deploy.search.optimize import OptimizeRequest, optimize


def _req(cache, **kw) -> OptimizeRequest:
    base = dict(
        model="tinyvgg",
        checkpoint=_builtin_ckpt(),
        data="builtin",
        max_accuracy_loss=3.0,
        methods=("cpcdrl", "greedy"),
        val_size=200,
        calib_size=32,
        test_limit=100,
        search=SearchConfig(episodes=5, warmup=2, seed=0),
        cache=cache,
    )
    base.update(kw)
    return OptimizeRequest(**base)


def _builtin_ckpt():
    from cpcdrl_deploy.models.zoo import resolve_checkpoint

    return resolve_checkpoint("tinyvgg", None, required=True)


def _plans(result) -> list[tuple]:
    return [
        (p["method"], p.get("cut"), p.get("ratios"), p["accuracy"]["validation"], p["accuracy"]["test"])
        for p in result["plans"]
    ]


def test_second_run_on_another_link_prunes_nothing_and_answers_the_same(tmp_path) -> None:
    cache = tmp_path / "acc"
    first = optimize(_req(cache)).to_data()
    assert first["timers"]["store_hits"] == 0 and cache_info(cache)["entries"] > 0
    # the same searches again: every plan comes from the cache, bit for bit the same answer
    again = optimize(_req(cache)).to_data()
    assert _plans(again) == _plans(first)
    assert again["timers"]["evaluations"] == 0 and again["timers"]["refit_s"] == 0.0
    assert again["timers"]["store_hits"] >= first["timers"]["evaluations"] - 1
    # and without a cache the answers are the same too: the cache changes cost, not results
    fresh = optimize(_req(None)).to_data()
    assert _plans(fresh) == _plans(first)
    # another link: other plans may be tried, but whatever overlaps is not scored again
    other = optimize(_req(cache, bandwidth_bytes_per_s=2e6, rtt_ms=20.0)).to_data()
    assert other["timers"]["store_hits"] > 0
    assert all(p["profiles"]["bandwidth_bytes_per_s"] == 2e6 for p in other["plans"])


def test_changed_checkpoint_or_calibration_misses(tmp_path) -> None:
    cache = tmp_path / "acc"
    optimize(_req(cache, methods=("greedy",)))
    n = cache_info(cache)["entries"]
    # another calibration set (size) changes the refit: a new context, nothing reused
    other = optimize(_req(cache, methods=("greedy",), calib_size=48)).to_data()
    assert other["timers"]["store_hits"] == 0
    # a checkpoint with one weight changed: another SHA-256, nothing reused
    sd = torch.load(_builtin_ckpt(), map_location="cpu", weights_only=False)
    net = sd["net"] if "net" in sd else sd
    k = next(k for k, v in net.items() if v.dtype.is_floating_point)
    net[k] = net[k].clone()
    net[k].view(-1)[0] += 1e-3
    ck = tmp_path / "changed.pth"
    torch.save(sd, ck)
    changed = optimize(_req(cache, methods=("greedy",), checkpoint=ck)).to_data()
    assert changed["timers"]["store_hits"] == 0
    # three set-ups x (validation, test) images
    assert cache_info(cache)["contexts"] == 6 and cache_info(cache)["entries"] > n


def test_partial_record_is_extended_and_damaged_entry_rescored(tmp_path) -> None:
    store = AccuracyCache(tmp_path, "c" * 32)
    store.put(3, (0.5, 0.5, 0.5), CachedScore((40,), (50,)))
    store.put(3, (0.5, 0.5, 0.5), CachedScore((40, 41), (50, 50)))  # longer: replaces
    store.put(3, (0.5, 0.5, 0.5), CachedScore((40,), (50,)))  # shorter: ignored
    assert store.get(3, (0.5, 0.5, 0.5)) == CachedScore((40, 41), (50, 50))
    p = next((tmp_path / ("c" * 32)).glob("*.json"))
    p.write_text("{not json")
    assert store.get(3, (0.5, 0.5, 0.5)) is None
    p.write_text(json.dumps({"schema_version": 99, "chunk_correct": [1], "chunk_sizes": [2]}))
    assert store.get(3, (0.5, 0.5, 0.5)) is None
    assert AccuracyCache(None, "x").get(3, (0.5,)) is None


def test_cache_cli_info_and_clear(tmp_path) -> None:
    cache = tmp_path / "acc"
    AccuracyCache(cache, "a" * 32).put(1, (0.5,), CachedScore((1,), (2,)))
    (cache / "keep-me").mkdir()  # not ours: clear leaves it
    r = CliRunner().invoke(app, ["cache", "info", "--cache", str(cache), "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["entries"] == 1
    r = CliRunner().invoke(app, ["cache", "clear", "--cache", str(cache)])
    assert r.exit_code == 0 and "removed 1" in r.stdout
    assert cache_info(cache)["entries"] == 0 and (cache / "keep-me").is_dir()
    assert clear_cache(tmp_path / "nothing-here") == 0
    shutil.rmtree(cache)
