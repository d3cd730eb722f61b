from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cpcdrl_deploy.analysis import analyze
from cpcdrl_deploy.data import load_cifar10
from cpcdrl_deploy.env import PlanEvaluator
from cpcdrl_deploy.evaluate import predict
from cpcdrl_deploy.fastcpu import dense, run_unit, scoring_copy
from cpcdrl_deploy.latency import AnalyticLatencyModel
from cpcdrl_deploy.prefix import PrefixCache, prefix_keys
from cpcdrl_deploy.pruning import Calibration, PruneConfig, channel_groups, prune
from cpcdrl_deploy.workflows import builtin_checkpoint
from cpcdrl_deploy.zoo import build_model, load_model

# three plans at cut 5 of tinyvgg: B shares its first two layers' widths with A, C its first with both
PLAN_A = [0.5, 0.75, 0.5, 0.5, 0.5]
PLAN_B = [0.5, 0.75, 0.25, 0.75, 0.5]
PLAN_C = [0.5, 1.0, 0.5, 0.25, 1.0]


def _model() -> nn.Module:
    return load_model("tinyvgg", builtin_checkpoint("tinyvgg"))  # trained: pruning moves its accuracy


def _calibration() -> Calibration:
    return Calibration(load_cifar10("builtin").train.tensors(np.arange(24))[0])


def _evaluator(prefix: PrefixCache | None) -> PlanEvaluator:
    model = _model()
    a = analyze(model, 32, "tinyvgg")
    x, y = load_cifar10("builtin").test.tensors(np.arange(200))
    calib = _calibration()
    return PlanEvaluator(model, a, channel_groups(model, a), AnalyticLatencyModel(5e8, 5e9, 2e5, 2e5), x, y, calib, PruneConfig(), chunk=80, prefix=prefix)


def test_refit_after_a_shared_prefix_gives_the_same_weights() -> None:
    model = _model()
    a = analyze(model, 32, "tinyvgg")
    groups = channel_groups(model, a)
    calib = _calibration()
    want = prune(model, a, 5, PLAN_B, calib, PruneConfig(), groups)
    cache = PrefixCache()
    prune(model, a, 5, PLAN_A, calib, PruneConfig(), groups, cache)
    hits = cache.hits
    got = prune(model, a, 5, PLAN_B, calib, PruneConfig(), groups, cache)
    assert cache.hits > hits  # B started after the prefix it shares with A
    assert got.reconstruction_error == want.reconstruction_error
    for (name, w), (_, g) in zip(want.model.state_dict().items(), got.model.state_dict().items()):
        assert torch.equal(w, g), name


def test_scores_after_a_shared_prefix_are_the_scores_of_a_full_pass() -> None:
    cached, plain = _evaluator(PrefixCache()), _evaluator(None)
    for ratios in (PLAN_A, PLAN_B, PLAN_C, [1.0] * 5):
        got, want = cached.evaluate(5, ratios), plain.evaluate(5, ratios)
        assert (got.accuracy, got.images) == (want.accuracy, want.images)
    assert cached.prefix is not None and cached.prefix.hits > 0
    assert len({plain.evaluate(5, r).accuracy for r in (PLAN_A, PLAN_B, PLAN_C, [1.0] * 5)}) > 1  # the plans score differently: the comparison can fail
    # chunk by chunk, against predict() on the same pruned model
    ev = cached
    net = scoring_copy(prune(ev.model, ev.analysis, 5, PLAN_B, ev.calibration, ev.prune_config, ev.groups).model)
    shape, _ = ev.price(5, PLAN_B)
    for i in range(3):
        hits = ev.prefix.hits  # type: ignore[union-attr]
        got_pred = ev._predict_chunk(net, i, shape.out_keep)
        assert ev.prefix.hits > hits  # type: ignore[union-attr]
        assert torch.equal(got_pred, predict(net, ev.val_x[i * 80 : (i + 1) * 80]))


def test_prefix_keys_change_with_every_layer_in_the_prefix() -> None:
    a = analyze(build_model("tinyvgg"), 32, "tinyvgg")
    n_units = len(build_model("tinyvgg").units())
    ka = prefix_keys(a, n_units, [0.5, 0.75, 0.5, 0.5, 0.5, 1.0, 1.0][: a.n_layers] + [1.0] * max(0, a.n_layers - 7))
    kb = prefix_keys(a, n_units, [0.5, 0.75, 0.25, 0.75, 0.5, 1.0, 1.0][: a.n_layers] + [1.0] * max(0, a.n_layers - 7))
    unit_of_third = a.layers[2].unit
    assert ka[: unit_of_third + 1] == kb[: unit_of_third + 1]  # before layer 3's unit: shared
    assert all(x != y for x, y in zip(ka[unit_of_third + 1 :], kb[unit_of_third + 1 :]))  # from it on: not


def test_cache_keeps_within_its_budget_and_drops_the_least_recently_used() -> None:
    mb = torch.zeros(256 * 1024)  # 1 MiB of float32
    cache = PrefixCache(budget_bytes=3 << 20)
    for k in "abc":
        cache.put(k, [mb])
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("d", [mb, mb])
    assert cache.bytes <= 3 << 20
    assert cache.get("b") is None and cache.get("c") is None and cache.get("a") is not None and cache.get("d") is not None
    cache.put("huge", [torch.zeros(1 << 20)])  # 4 MiB: larger than the budget, not kept, nothing evicted for it
    assert cache.get("huge") is None and cache.get("a") is not None


@pytest.mark.parametrize("name", ["tinysplit", "vgg16", "mobilenet"])
def test_units_leave_their_input_alone(name: str) -> None:
    """The cache keeps activations by reference: a unit that wrote into its input would corrupt them."""
    torch.manual_seed(0)
    model = build_model(name)
    for net in (model, scoring_copy(model)):
        x = torch.randn(4, 3, 32, 32)
        with torch.no_grad():
            for unit in net.units():
                before = dense(x).clone()
                y = run_unit(unit, x)
                assert torch.equal(dense(x), before)
                x = y
