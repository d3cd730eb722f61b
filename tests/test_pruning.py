from __future__ import annotations

import pytest
import torch

from cpcdrl_deploy.compress.pruning import Calibration, PruneConfig, channel_groups, kept_channels, plan_shape, prune
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.models.graph import analyze
from cpcdrl_deploy.models.zoo import ZOO, build_model, load_model

from .conftest import CHECKPOINTS, need_shared


@pytest.mark.parametrize("name", ["vgg16", "mobilenet", "resnet18", "mobilenet_v2"])
def test_pruned_models_are_consistent_and_match_plan_shape(name: str) -> None:
    """Every zoo model prunes to a smaller, runnable module whose shape the planner predicts."""
    torch.manual_seed(0)
    side = ZOO[name].input_size
    model = build_model(name)
    a = analyze(model, side, name)
    groups = channel_groups(model, a)
    cuts = a.cuttable_points()
    for cut in (cuts[len(cuts) // 2], a.n_layers):
        ratios = [0.5 if t % 2 else 0.75 for t in range(cut)]
        res = prune(model, a, cut, ratios, None, PruneConfig(refit=False), groups)
        x = torch.randn(2, 3, side, side)
        with torch.no_grad():
            y = res.model(x)
        assert y.shape == (2, ZOO[name].num_classes)  # the classifier keeps all outputs
        after = analyze(res.model, side)
        shape = plan_shape(a, groups, cut, ratios)
        assert tuple(layer.macs for layer in after.layers) == shape.layer_macs
        assert after.points[cut].out_bytes == shape.cut_bytes
        assert after.total_macs < a.total_macs
        assert after.layers[0].in_channels == 3  # the image is never pruned
        # nothing beyond the first dense consumer on the cloud side changes its output width
        for layer_before, layer_after in zip(a.layers, after.layers):
            if layer_before.index > cut and layer_after.kind != "dwconv":
                assert layer_after.out_channels == layer_before.out_channels
    assert (
        model.state_dict()[next(iter(model.state_dict()))].shape
        == build_model(name).state_dict()[next(iter(model.state_dict()))].shape
    )


def test_depthwise_follows_its_producer() -> None:
    model = build_model("mobilenet")
    a = analyze(model, 32, "mobilenet")
    res = prune(model, a, 3, [0.5, 0.9, 0.25], None, PruneConfig(refit=False))
    mods = dict(res.model.named_modules())
    assert mods["conv1"].out_channels == 16 and mods["layers.0.conv1"].out_channels == 16  # dw ratio 0.9 ignored
    assert mods["layers.0.conv2"].out_channels == 16 and mods["layers.0.conv2"].in_channels == 16
    assert mods["layers.1.conv1"].out_channels == 16  # cloud-side depthwise drops the same channels
    assert mods["layers.1.conv2"].in_channels == 16 and mods["layers.1.conv2"].out_channels == 128
    assert res.ratios == [0.5, 1.0, 0.25]


def test_residual_groups_crossing_the_cut_stay_whole() -> None:
    model = build_model("resnet18")
    a = analyze(model, 224, "resnet18")
    cut = a.cuttable_points()[2]  # after layer1.0: the stage's residual stream continues on the cloud
    res = prune(model, a, cut, [0.5] * cut, None, PruneConfig(refit=False))
    mods = dict(res.model.named_modules())
    assert mods["net.conv1"].out_channels == 64 and mods["net.layer1.0.conv1"].out_channels == 32


def test_kept_channels_rounding() -> None:
    assert kept_channels(0.5, 64) == 32
    assert kept_channels(0.01, 64) == 1
    assert kept_channels(0.3, 64, round_to=8) == 16
    assert kept_channels(0.01, 64, round_to=8) == 8
    assert kept_channels(1.0, 10, round_to=8) == 10
    with pytest.raises(CpcdrlError):
        kept_channels(0.0, 64)


def test_bad_plans_are_refused() -> None:
    model = build_model("resnet18")
    a = analyze(model, 224, "resnet18")
    with pytest.raises(CpcdrlError, match="single tensor"):
        prune(model, a, 2, [1.0, 1.0], None, PruneConfig(refit=False))
    with pytest.raises(CpcdrlError, match="exactly one per edge layer"):
        prune(model, a, 1, [1.0, 1.0], None, PruneConfig(refit=False))


@pytest.mark.parametrize("name", ["vgg16", "mobilenet"])
def test_refit_lowers_reconstruction_error_and_output_error(name: str, cifar_dir) -> None:
    from cpcdrl_deploy.models.data import load_images

    model = load_model(name, need_shared(CHECKPOINTS[name]))
    a = analyze(model, 32, name)
    data = load_images(cifar_dir)
    calib = Calibration(data.train.tensors(list(range(0, 50000, 250)))[0])
    x, _ = data.test.tensors(list(range(0, 10000, 50)))
    cut = 8
    plain = prune(model, a, cut, [0.5] * cut, None, PruneConfig(refit=False))
    fitted = prune(model, a, cut, [0.5] * cut, calib, PruneConfig(refit=True))
    assert fitted.refitted, "consumers of pruned channels must be refitted"
    for name_, (before, after) in fitted.reconstruction_error.items():
        assert after <= before, name_
    assert sum(a_ for _, a_ in fitted.reconstruction_error.values()) < 0.6 * sum(
        b for b, _ in fitted.reconstruction_error.values()
    )
    with torch.no_grad():
        ref = model(x)
        err_plain = (plain.model(x) - ref).norm() / ref.norm()
        err_fit = (fitted.model(x) - ref).norm() / ref.norm()
    assert err_fit < 0.6 * err_plain


def test_patches_at_sampled_positions_equal_unfold() -> None:
    """The refit reads only the sampled windows; they must be exactly F.unfold's columns at those positions."""
    import torch.nn.functional as F

    from cpcdrl_deploy.compress.pruning import patches_at

    torch.manual_seed(0)
    for k, s, p, d, h in [(3, 1, 1, 1, 8), (3, 2, 1, 1, 9), (1, 1, 0, 1, 6), (3, 2, 0, 1, 10), (5, 1, 2, 2, 12)]:
        conv = torch.nn.Conv2d(4, 6, k, stride=s, padding=p, dilation=d)
        x = torch.randn(3, 4, h, h)
        u = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
        pos = torch.stack([torch.randperm(u.shape[2])[:5] for _ in range(3)])
        want = torch.gather(u, 2, pos.unsqueeze(1).expand(3, u.shape[1], 5)).permute(0, 2, 1).reshape(-1, u.shape[1])
        assert torch.equal(patches_at(x, conv, pos), want), (k, s, p, d)


@pytest.mark.parametrize("n,d", [(50, 20), (20, 50)])
def test_ridge_dual_and_primal_forms_agree(n: int, d: int) -> None:
    """Fewer points than columns: the dual (n x n) form; more: the primal (D x D). Both are the same ridge solution."""
    from cpcdrl_deploy.compress.pruning import ridge_toward

    torch.manual_seed(1)
    x, y, w0 = torch.randn(n, d), torch.randn(n, 7), torch.randn(7, d)
    lam = 0.1 * float(x.square().sum()) / d
    a = x.double().T @ x.double() + lam * torch.eye(d, dtype=torch.float64)
    want = torch.linalg.solve(a, x.double().T @ y.double() + lam * w0.double().T).T
    w, before, after = ridge_toward(x, y, w0, 0.1)
    assert (w.double() - want).abs().max() < 1e-4
    rel = lambda m: float(torch.linalg.norm(y - x @ m.T) / torch.linalg.norm(y))
    assert before == pytest.approx(rel(w0), rel=1e-4) and after == pytest.approx(rel(w), rel=1e-4) and after < before
