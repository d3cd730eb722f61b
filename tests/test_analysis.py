from __future__ import annotations

import pytest

from cpcdrl_deploy.models.graph import analyze
from cpcdrl_deploy.models.zoo import ZOO, build_model


def _analysis(name: str):
    return analyze(build_model(name), ZOO[name].input_size, name)


def test_vgg16_macs_and_shapes_are_exact() -> None:
    a = _analysis("vgg16")
    assert a.total_macs == 313_201_664
    assert a.n_layers == 14
    first = a.layers[0]
    assert (first.kind, first.macs) == ("conv", 3 * 3 * 3 * 64 * 32 * 32)
    assert a.layers[-1].kind == "fc" and a.layers[-1].macs == 512 * 10
    # cut 2 carries the pooled 64x16x16 tensor; cut 0 the image; cut N the logits
    assert a.points[2].out_shape == (64, 16, 16) and a.points[2].out_bytes == 64 * 16 * 16 * 4
    assert a.points[0].out_bytes == 3 * 32 * 32 * 4 and a.points[0].macs == 0
    assert a.points[-1].out_shape == (10,)
    assert all(p.cuttable for p in a.points)


def test_mobilenet_macs_count_depthwise_with_groups() -> None:
    a = _analysis("mobilenet")
    assert a.total_macs == 46_354_432
    assert a.n_layers == 28
    dw = a.layers[1]
    assert dw.kind == "dwconv" and dw.macs == 3 * 3 * 1 * 32 * 32 * 32
    assert [p.cum_macs for p in a.points][-1] == a.total_macs
    assert a.points[27].out_shape == (1024, 1, 1)  # global pooling folded into the last conv's unit


# found from the traced graph: ResNet-18's 8 blocks, stem and classifier; MobileNetV2 inside its 7 blocks without a
# residual add too (between expansion, depthwise and projection: one tensor crosses there), never inside the 10 with one
@pytest.mark.parametrize("name,n_cuts", [("resnet18", 11), ("mobilenet_v2", 34)])
def test_dag_models_cut_only_at_block_boundaries(name: str, n_cuts: int) -> None:
    a = _analysis(name)
    cuts = a.cuttable_points()
    assert len(cuts) == n_cuts and cuts[0] == 0 and cuts[-1] == a.n_layers
    # inside a residual block no single tensor crosses
    names = {p.index: p.name for p in a.points if not p.cuttable}
    assert names, "a DAG model must have non-cuttable points"
    if name == "mobilenet_v2":
        cuttable = {p.name for p in a.points if p.cuttable}
        assert "net.features.2.conv.1.0" in cuttable  # stride 2, 16 -> 24: no residual add
        assert {"net.features.3.conv.0.0", "net.features.3.conv.1.0"} <= set(names.values())  # 24 -> 24, residual
    if name == "resnet18":
        assert "net.layer1.0.conv1" in names.values()
        assert a.total_macs == 1_814_073_344
