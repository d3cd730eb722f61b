from __future__ import annotations

import numpy as np
import pytest
import torch

from cpcdrl_deploy.compress.pruning import PruneConfig, channel_groups
from cpcdrl_deploy.measure.latency import AnalyticLatencyModel
from cpcdrl_deploy.models.graph import analyze
from cpcdrl_deploy.models.zoo import build_model
from cpcdrl_deploy.search.evaluator import CompressionStates, PlanEvaluator, partition_state
from cpcdrl_deploy.search.methods import keep_ratio


def test_compression_state_follows_eq9() -> None:
    a = analyze(build_model("mobilenet"), 32, "mobilenet")
    states = CompressionStates(a)
    assert states.dim == 11
    s1 = states.state(1, 1.0, 10)
    s2 = states.state(2, 0.4, 10)
    assert s1.shape == (11,) and s1.dtype == np.float32
    assert s1[0] == 0.0 and s2[0] == pytest.approx(1 / 27)  # t, min-max normalised over 1..28
    assert s1[1] == 0.0 and s2[1] == 0.5  # conv, then depthwise
    assert s2[8] == pytest.approx(0.4)  # a_{t-1}
    assert s1[9] == pytest.approx(10 / 28)  # p
    last = states.state(28, 1.0, 28)
    assert last[1] == 1.0  # the fc layer
    assert np.all(
        (np.stack([states.state(t, 0.5, 28) for t in range(1, 29)]) >= 0)
        & (np.stack([states.state(t, 0.5, 28) for t in range(1, 29)]) <= 1)
    )


def test_partition_state_is_the_compression_strategy() -> None:
    s = partition_state((0.5, 0.25), 2, 4)
    assert s.tolist() == [0.5, 0.25, 1.0, 1.0, 0.5]


def test_keep_ratio_maps_actions_into_range() -> None:
    assert keep_ratio(0.0, 0.2) == pytest.approx(0.2)
    assert keep_ratio(1.0, 0.2) == 1.0
    assert keep_ratio(1.7, 0.2) == 1.0


def _tiny_evaluator() -> PlanEvaluator:
    """tinyvgg, 40 random images in chunks of 16, no refit: cheap and deterministic."""
    torch.manual_seed(0)
    model = build_model("tinyvgg")
    a = analyze(model, 32, "tinyvgg")
    x = torch.randn(40, 3, 32, 32)
    y = torch.randint(0, 10, (40,))
    return PlanEvaluator(
        model,
        a,
        channel_groups(model, a),
        AnalyticLatencyModel(5e8, 5e9, 2e5, 2e5),
        x,
        y,
        None,
        PruneConfig(refit=False),
        chunk=16,
    )


def test_evaluator_caches_identical_plans() -> None:
    ev = _tiny_evaluator()
    a = ev.analysis
    e1 = ev.evaluate(3, [0.5, 0.5, 0.5])
    e2 = ev.evaluate(3, [0.51, 0.49, 0.5])  # same channel counts after rounding
    assert e2 is e1 and ev.timers.cache_hits == 1 and ev.timers.evaluations == 1
    full_a = ev.evaluate(a.n_layers, [1.0] * a.n_layers)
    full_b = ev.evaluate(0, [])
    assert full_a.accuracy == full_b.accuracy and ev.timers.evaluations == 2  # unpruned: scored once for every cut
    assert full_b.latency.total_ms != full_a.latency.total_ms
    assert e1.images == 40 and 0 <= e1.accuracy <= 100


def test_drop_standard_error_is_paired_with_the_unpruned_model(tmp_path) -> None:
    """drop_se comes from the images whose correctness the plan changed, and the persistent cache replays it."""
    from cpcdrl_deploy.compress.pruning import prune
    from cpcdrl_deploy.models.evaluate import predict
    from cpcdrl_deploy.models.scoring import scoring_copy
    from cpcdrl_deploy.search.accuracy_cache import AccuracyCache

    def evaluator() -> PlanEvaluator:
        ev = _tiny_evaluator()
        torch.manual_seed(1)
        with (
            torch.no_grad()
        ):  # He-scaled weights: the default init predicts one class for every image, and no plan changes that
            for w in ev.model.parameters():
                if w.dim() > 1:
                    w.normal_(0.0, (2.0 / w[0].numel()) ** 0.5)
        ev.store = AccuracyCache(tmp_path, "ctx")
        return ev

    ev = evaluator()
    a = ev.analysis
    ratios = [0.25, 0.25, 0.25]
    e = ev.evaluate(3, ratios)
    ok0 = predict(scoring_copy(ev.model), ev.val_x) == ev.val_y
    ok = (
        predict(scoring_copy(prune(ev.model, a, 3, ratios, None, ev.prune_config, ev.groups).model), ev.val_x)
        == ev.val_y
    )
    diff = ok0.float() - ok.float()  # +1 lost, -1 gained, 0 unchanged
    n = len(diff)
    assert int((ok != ok0).sum()) > 0  # the test needs a plan that changes something
    expected = 100.0 * np.sqrt(((diff != 0).sum().item() + 1) / n - diff.mean().item() ** 2) / np.sqrt(n)
    assert e.drop_se == pytest.approx(expected) and e.accuracy == pytest.approx(100.0 * ok.float().mean().item())
    # unchanged predictions still get a margin (one image's worth), never zero
    assert ev.evaluate(a.n_layers, [1.0] * a.n_layers).drop_se == pytest.approx(100.0 * np.sqrt(1 / n) / np.sqrt(n))
    fresh = evaluator()
    again = fresh.evaluate(3, ratios)
    assert fresh.timers.store_hits == 1 and fresh.timers.evaluations == 0 and again.drop_se == e.drop_se


def test_plans_no_faster_than_the_incumbent_are_screened_on_one_chunk() -> None:
    ev = _tiny_evaluator()
    a = ev.analysis
    ms = ev.price(3, [0.5, 0.5, 0.5])[1].total_ms
    slow = ev.evaluate(3, [0.5, 0.5, 0.5], incumbent_ms=ms)  # no faster than the incumbent: one chunk
    assert slow.screened and slow.images == 16 and ev.timers.screened == 1
    assert ev.evaluate(3, [0.5, 0.5, 0.5], incumbent_ms=ms - 1.0) is slow  # still screened: the cached estimate serves
    full = ev.evaluate(3, [0.5, 0.5, 0.5], incumbent_ms=ms + 1.0)  # could now become the answer: scored in full
    assert not full.screened and full.images == 40 and ev.timers.evaluations == 2
    assert ev.evaluate(3, [0.5, 0.5, 0.5], incumbent_ms=ms) is full  # a full score serves every later caller
    unpruned = ev.evaluate(a.n_layers, [1.0] * a.n_layers, incumbent_ms=0.0)
    assert not unpruned.screened and unpruned.images == 40  # the reference is always scored in full


def test_refinement_tries_narrow_layers_whose_block_exceeds_the_first_step() -> None:
    """tinyvgg's 16-channel layers prune in blocks of 8 (0.5 of the layer): refinement must still try them."""
    from cpcdrl_deploy.search.methods import SearchConfig, _refine, _Tracker

    ev = _tiny_evaluator()
    track = _Tracker("t", a0=-1.0)  # every plan is feasible: refinement may go as far as the blocks allow
    track.add(ev.evaluate(2, [1.0, 1.0]))
    _refine(ev, SearchConfig(refine_other_cuts=False), track, budget=10, reward_of=lambda e: 0.0)  # this cut only
    best = track.result.best
    assert best.cut == 2 and best.shape.out_keep[:2] == (0.5, 0.5)  # 8 of 16 channels each: one block below full


def test_refinement_moves_to_another_cut_once_its_cut_is_exhausted() -> None:
    """A descent that has nothing left to try at its cut hands the budget on instead of stopping early."""
    from dataclasses import replace

    from cpcdrl_deploy.search.methods import SearchConfig, _refine, _Tracker

    runs = {}
    for other in (False, True):
        ev = _tiny_evaluator()
        track = _Tracker("t", a0=-1.0)  # every plan is feasible
        track.add(ev.evaluate(1, [1.0]))  # start at cut 1: its descent ends within a few proposals
        _refine(ev, replace(SearchConfig(), refine_other_cuts=other), track, budget=30, reward_of=lambda e: 0.0)
        runs[other] = (track.result, ev)
    alone, onward = runs[False][0], runs[True][0]
    assert len(alone.rewards) < 30 and {c for c, _, _ in alone.history} <= {1, 2}  # the old rule: budget left unspent
    n = runs[True][1].analysis.n_layers
    assert onward.best.cut == n and onward.best.latency.total_ms < alone.best.latency.total_ms
    assert len(onward.rewards) <= 30
    # the new cut was entered from its unpruned split, scored once, then descended
    first = next(i for i, (c, _, _) in enumerate(onward.history) if c == n)
    assert onward.history[first][2] == runs[True][1].price(n, [1.0] * n)[1].total_ms
    assert any(c == n and ms < onward.history[first][2] for c, _, ms in onward.history[first + 1 :])


def test_refinement_skips_cuts_that_start_far_behind_the_best() -> None:
    """A cut that could beat the best at r_min, but whose known plan is over other_cut_slack x slower, gets no
    descent."""
    from dataclasses import replace

    from cpcdrl_deploy.search.methods import SearchConfig, _next_cut, _Tracker

    ev = _tiny_evaluator()
    n = ev.analysis.n_layers
    track = _Tracker("t", a0=-1.0)
    track.add(ev.evaluate(n, [1.0] * n))  # the best plan: all on the edge, unpruned
    best_ms = track.result.best.latency.total_ms
    pool = [c for c in ev.analysis.cuttable_points() if c > 0]
    # cut n-1 could beat it with every layer at r_min, but its unpruned split (where a descent starts) is 2x slower
    assert ev.price(n - 1, [0.2] * (n - 1))[1].total_ms < best_ms < ev.price(n - 1, [1.0] * (n - 1))[1].total_ms / 1.3
    assert _next_cut(ev, replace(SearchConfig(), other_cut_slack=1.3), track, pool, {n}) is None
    assert _next_cut(ev, replace(SearchConfig(), other_cut_slack=100.0), track, pool, {n}) == n - 1


def test_the_selection_margin_never_excludes_the_unpruned_model() -> None:
    """With no accuracy to lose, the unpruned model is the answer: the margin is for noisy pruned estimates, not for
    it."""
    from cpcdrl_deploy.search.methods import SearchConfig, margin_rule, run_rl

    ev = _tiny_evaluator()
    n = ev.analysis.n_layers
    base = ev.evaluate(n, [1.0] * n)
    pruned = ev.evaluate(2, [0.5, 0.5])
    assert base.unpruned and not pruned.unpruned
    for paired in (True, False):  # A0 + margin is above what the unpruned model scores, under either rule
        assert margin_rule(SearchConfig(margin_paired=paired), base.accuracy, len(ev.val_y))(pruned) > 0
    res = run_rl(ev, base.accuracy, SearchConfig(episodes=8, warmup=4, seed=0))  # --max-accuracy-loss 0
    assert res.best is not None and res.best.unpruned and res.best.accuracy == base.accuracy


def test_refinement_exchanges_a_dear_block_for_a_cheaper_one_when_single_moves_are_exhausted() -> None:
    """A descent stuck because its one pruned layer is the wrong one gives it back to prune another, if that is
    faster."""
    from dataclasses import replace

    from cpcdrl_deploy.search.methods import SearchConfig, _refine, _Tracker

    found = {}
    for exchange in (False, True):
        ev = _tiny_evaluator()
        # feasible while at most one of the two edge layers is pruned: from [0.5, 1.0] no single move is left
        track = _Tracker("t", a0=-1.0, margin=lambda e: 1e9 if all(k < 1.0 for k in e.shape.out_keep[:2]) else 0.0)
        track.add(ev.evaluate(2, [0.5, 1.0]))
        start = track.result.best
        _refine(
            ev,
            replace(SearchConfig(), refine_exchange=exchange, refine_other_cuts=False),
            track,
            budget=10,
            reward_of=lambda e: 0.0,
        )
        found[exchange] = track.result.best
    assert ev.price(2, [1.0, 0.5])[1].total_ms < start.latency.total_ms  # the exchange pays (layer 2 feeds the wire)
    assert found[False] is start or found[False].shape.out_keep[:2] == start.shape.out_keep[:2]
    assert found[True].shape.out_keep[:2] == (1.0, 0.5) and found[True].latency.total_ms < start.latency.total_ms
