from __future__ import annotations

import pytest
import torch

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.models.zoo import ZOO, build_model, extract_state_dict, load_checkpoint

from .conftest import CHECKPOINTS, need_shared


@pytest.mark.parametrize("name", list(ZOO))
def test_units_compose_to_the_full_forward(name: str) -> None:
    """Running the units one by one is the model's forward pass."""
    torch.manual_seed(0)
    model = build_model(name)
    side = ZOO[name].input_size
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        y = model(x)
        h = x
        for unit in model.units():
            h = unit(h)
    assert y.shape == (2, ZOO[name].num_classes)
    assert torch.equal(y, h)


def _pytorch_cifar_mobilenet_keys() -> list[str]:
    keys = ["conv1.weight"] + [
        f"bn1.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ]
    for b in range(13):
        for c in ("conv1", "conv2"):
            keys.append(f"layers.{b}.{c}.weight")
            bn = "bn1" if c == "conv1" else "bn2"
            keys += [
                f"layers.{b}.{bn}.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
            ]
    return keys + ["linear.weight", "linear.bias"]


def test_cifar_layouts_match_pytorch_cifar_keys() -> None:
    assert sorted(build_model("mobilenet").state_dict()) == sorted(_pytorch_cifar_mobilenet_keys())
    vgg = build_model("vgg16").state_dict()
    assert "features.0.weight" in vgg and "features.41.running_var" in vgg and "classifier.weight" in vgg
    assert vgg["classifier.weight"].shape == (10, 512)


@pytest.mark.parametrize("name", ["vgg16", "mobilenet"])
def test_reference_checkpoints_load(name: str) -> None:
    path = need_shared(CHECKPOINTS[name])
    model = build_model(name)
    meta = load_checkpoint(model, path)
    assert meta["acc"] > 80
    ref = torch.load(path, map_location="cpu", weights_only=True)["net"]
    assert torch.equal(
        model.state_dict()["linear.weight" if name == "mobilenet" else "classifier.weight"],
        ref["linear.weight" if name == "mobilenet" else "classifier.weight"],
    )


@pytest.mark.parametrize("wrap", ["bare", "net", "state_dict", "model", "module_prefix"])
def test_checkpoint_variants(tmp_path, wrap: str) -> None:
    src = build_model("tinyvgg")
    sd = src.state_dict()
    obj = {
        "bare": sd,
        "net": {"net": sd, "acc": 50.0, "epoch": 1},
        "state_dict": {"state_dict": sd},
        "model": {"model": sd},
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
    }[wrap]
    path = tmp_path / "ck.pth"
    torch.save(obj, path)
    dst = build_model("tinyvgg")
    load_checkpoint(dst, path)
    for k, v in sd.items():
        assert torch.equal(dst.state_dict()[k], v)


def test_wrong_architecture_is_refused_naming_keys(tmp_path) -> None:
    path = tmp_path / "mobilenet.pth"
    torch.save({"net": build_model("mobilenet").state_dict()}, path)
    with pytest.raises(CpcdrlError, match=r"missing features\.0\.weight.*unexpected conv1\.weight"):
        load_checkpoint(build_model("vgg16"), path)


def test_corrupt_and_missing_checkpoints(tmp_path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CpcdrlError, match="is not a PyTorch checkpoint"):
        load_checkpoint(build_model("tinyvgg"), bad)
    with pytest.raises(CpcdrlError, match="not found"):
        load_checkpoint(build_model("tinyvgg"), tmp_path / "nope.pth")
    with pytest.raises(CpcdrlError, match="no state_dict"):
        extract_state_dict({"acc": 3.0})


def test_demo_model_ships_weights_and_has_a_cut_smaller_than_the_image() -> None:
    """The built-in demo exists to show a split: some interior cut must send fewer bytes than the image."""
    from cpcdrl_deploy.cli import DEMO_MODEL as CLI_DEMO
    from cpcdrl_deploy.models.graph import analyze
    from cpcdrl_deploy.models.zoo import DEMO_MODEL, builtin_checkpoint

    assert CLI_DEMO == DEMO_MODEL and builtin_checkpoint(DEMO_MODEL) is not None
    a = analyze(build_model(DEMO_MODEL), 32, DEMO_MODEL)
    image = a.points[0].out_bytes
    # not just before the classifier, where the edge has already done all the work
    assert any(a.points[c].out_bytes <= image // 2 for c in range(1, a.n_layers - 2))
