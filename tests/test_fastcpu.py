from __future__ import annotations

import pytest
import torch
from torch import nn

from cpcdrl_deploy.compress.pruning import PruneConfig, channel_groups, prune
from cpcdrl_deploy.compress.transfer import WireModel
from cpcdrl_deploy.models.evaluate import predict
from cpcdrl_deploy.models.graph import analyze
from cpcdrl_deploy.models.scoring import scoring_copy
from cpcdrl_deploy.models.zoo import build_model

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")


def _with_trained_bn(model: nn.Module) -> nn.Module:
    """Batch norms with statistics far from (0, 1): a wrong fold would show."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 3 + 0.1)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


@pytest.mark.parametrize("name", ["tinysplit", "vgg16", "mobilenet"])
def test_scoring_copy_computes_what_the_model_computes(name: str) -> None:
    torch.manual_seed(0)
    model = _with_trained_bn(build_model(name))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = scoring_copy(model)
    x = torch.randn(96, 3, 32, 32)
    with torch.no_grad():
        want, got = model(x), fast(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    assert torch.equal(predict(fast, x), predict(model, x))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the original is untouched
    if name == "mobilenet":  # its convolutions sit between functional ops: packing them would only add conversions
        assert fast is model
    else:
        assert fast is not model
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())  # every batch norm was folded


def test_scoring_copy_of_a_pruned_model_and_behind_a_lossy_wire() -> None:
    """Channel counts that are not multiples of 8 (oneDNN pads its blocks) and the int8 wire's unit-by-unit forward."""
    torch.manual_seed(0)
    model = _with_trained_bn(build_model("tinysplit"))
    a = analyze(model, 32, "tinysplit")
    cut = a.n_layers - 1
    pruned = prune(
        model, a, cut, [0.55] * cut, None, PruneConfig(refit=False, round_to=1), channel_groups(model, a)
    ).model
    x = torch.randn(64, 3, 32, 32)
    boundary = a.points[2].unit_boundary
    for eager, fast in (
        (pruned, scoring_copy(pruned)),
        (WireModel(pruned, boundary, "int8"), WireModel(scoring_copy(pruned), boundary, "int8")),
    ):
        with torch.no_grad():
            want, got = eager(x), fast(x)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_scoring_copy_leaves_models_it_cannot_run_alone() -> None:
    model = build_model("tinysplit").double()
    assert scoring_copy(model) is model
