"""Model zoo: networks addressed by name, each seen as an ordered list of *units*.

A unit is a piece of the forward pass whose output is exactly one tensor, so a
cut between two units carries one tensor. Running the units in order is the
model's forward pass. Prunable layers (conv / fc) live inside units; a cut after
layer L_i is only possible when L_i is the last prunable layer of its unit
(always true for the sequential CIFAR networks, at block boundaries for DAGs).

The CIFAR networks keep the pytorch-cifar ``state_dict`` layout exactly, so the
checkpoints in ``../shared/models`` and the many trained with that script load
unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from cpcdrl_deploy.core.errors import CpcdrlError

VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
TINYVGG_CFG: list[int | str] = [16, 16, "M", 32, 32, "M", 64, 64, "M"]
# A narrow layer early (24 channels at 8x8: half the image's bytes) and the
# heavy layers after it: the "bottleneck" split-computing networks are built
# around (Matsubara et al., ACM CSUR 2022, doi:10.1145/3527155; BottleFit,
# arXiv:2201.02693). On 32x32 inputs every plain CIFAR network's early
# tensors outweigh the image, so without one a split cannot pay.
TINYSPLIT_CFG: list[int | str] = [32, "M", 24, "M", 128, 128, "M", 256, "M"]
MOBILENET_CFG: list[int | tuple[int, int]] = [
    64,
    (128, 2),
    128,
    (256, 2),
    256,
    (512, 2),
    512,
    512,
    512,
    512,
    512,
    (1024, 2),
    1024,
]


class Unit(nn.Module):
    """A named slice of a model's forward pass that outputs one tensor.

    It *references* modules owned by the model: units are made on demand and
    are not children of the model, so the model's ``state_dict`` is unchanged,
    in-place channel pruning of the model is seen by its units, and a unit
    exported alone (ONNX) carries its own parameters.
    """

    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor], modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.unit_name = name
        self._fn = fn
        self.refs = nn.ModuleList(modules)
        # mirror the model's mode without recursing (train()/eval() would flip the
        # model's own modules, e.g. an exporter restoring "training" on the unit)
        self.training = all(m.training for m in modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x)


class UnitModel(nn.Module):
    """Base for zoo models: ``forward`` runs ``units()`` in order."""

    def units(self) -> list[Unit]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units():
            x = unit(x)
        return x


class CifarVGG(UnitModel):
    """VGG for 32x32 inputs, pytorch-cifar layout (``features``, ``classifier``)."""

    def __init__(self, cfg: list[int | str], num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                c_in = int(v)
        layers.append(nn.AvgPool2d(1, 1))
        self.features = nn.Sequential(*layers)
        side = 32 >> cfg.count("M")  # spatial side left for the classifier (1 for VGG16)
        self.classifier = nn.Linear(c_in * side * side, num_classes)

    def units(self) -> list[Unit]:
        # One unit per conv (conv, bn, relu and any pooling before the next
        # conv), so each cut carries the already-pooled (smaller) tensor.
        mods = list(self.features)
        units: list[Unit] = []
        i = 0
        while i < len(mods):
            if not isinstance(mods[i], nn.Conv2d):
                raise AssertionError("unexpected VGG layout")
            j = i + 3
            while j < len(mods) and not isinstance(mods[j], nn.Conv2d):
                j += 1
            seq = nn.Sequential(*mods[i:j])
            units.append(Unit(f"features.{i}", seq, [seq]))
            i = j
        cls = self.classifier
        units.append(Unit("classifier", lambda x: cls(torch.flatten(x, 1)), [cls]))
        return units


class _MobileBlock(nn.Module):
    """Depthwise conv + pointwise conv (pytorch-cifar ``Block`` layout)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv2 = nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class CifarMobileNet(UnitModel):
    """MobileNet v1 for 32x32 inputs, pytorch-cifar layout."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        blocks = []
        c_in = 32
        for v in MOBILENET_CFG:
            c_out, stride = (v, 1) if isinstance(v, int) else v
            blocks.append(_MobileBlock(c_in, c_out, stride))
            c_in = c_out
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(1024, num_classes)

    def units(self) -> list[Unit]:
        def conv_bn_relu(conv: nn.Module, bn: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
            return lambda x: F.relu(bn(conv(x)))

        units = [Unit("conv1", conv_bn_relu(self.conv1, self.bn1), [self.conv1, self.bn1])]
        last = len(self.layers) - 1
        blocks = cast(Sequence[_MobileBlock], self.layers)
        for b, blk in enumerate(blocks):
            units.append(Unit(f"layers.{b}.conv1", conv_bn_relu(blk.conv1, blk.bn1), [blk.conv1, blk.bn1]))
            pw = conv_bn_relu(blk.conv2, blk.bn2)
            if b == last:  # fold the global pooling into the last unit: its cut tensor is the pooled one
                pw = (lambda f: lambda x: F.avg_pool2d(f(x), 2))(pw)
            units.append(Unit(f"layers.{b}.conv2", pw, [blk.conv2, blk.bn2]))
        lin = self.linear
        units.append(Unit("linear", lambda x: lin(torch.flatten(x, 1)), [lin]))
        return units


class TorchvisionUnits(UnitModel):
    """Wraps a torchvision ResNet / MobileNetV2 and cuts it at block boundaries."""

    def __init__(self, arch: str, net: nn.Module) -> None:
        super().__init__()
        self.arch = arch
        self.net = net

    def units(self) -> list[Unit]:
        n: Any = self.net  # torchvision's modules by attribute: typed as Tensor | Module by torch
        if self.arch == "resnet18":
            stem = nn.Sequential(n.conv1, n.bn1, n.relu, n.maxpool)
            units = [Unit("net.conv1", stem, [stem])]
            for lname in ("layer1", "layer2", "layer3", "layer4"):
                for b, blk in enumerate(getattr(n, lname)):
                    units.append(Unit(f"net.{lname}.{b}", blk, [blk]))
            units[-1] = Unit(
                units[-1].unit_name, (lambda blk: lambda x: n.avgpool(blk(x)))(n.layer4[-1]), [n.layer4[-1]]
            )
            units.append(Unit("net.fc", lambda x: n.fc(torch.flatten(x, 1)), [n.fc]))
            return units
        if self.arch == "mobilenet_v2":
            units = [Unit(f"net.features.{i}", m, [m]) for i, m in enumerate(n.features)]
            last = n.features[-1]
            units[-1] = Unit(units[-1].unit_name, lambda x: F.adaptive_avg_pool2d(last(x), 1), [last])
            cls = n.classifier
            units.append(Unit("net.classifier", lambda x: cls(torch.flatten(x, 1)), [cls]))
            return units
        raise AssertionError(self.arch)


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    input_size: int  # square image side in pixels
    num_classes: int
    build: Callable[[], UnitModel]
    dataset: str  # what it is meant for: "cifar10" or "imagenet"


def _torchvision(arch: str) -> UnitModel:
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None)
    return TorchvisionUnits(arch, net)


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry(
            "vgg16", "VGG16-BN for CIFAR-10 (pytorch-cifar layout)", 32, 10, lambda: CifarVGG(VGG16_CFG), "cifar10"
        ),
        ZooEntry("mobilenet", "MobileNet v1 for CIFAR-10 (pytorch-cifar layout)", 32, 10, CifarMobileNet, "cifar10"),
        ZooEntry(
            "tinyvgg",
            "6-conv VGG-BN for CIFAR-10, shipped with weights",
            32,
            10,
            lambda: CifarVGG(TINYVGG_CFG),
            "cifar10",
        ),
        ZooEntry(
            "tinysplit",
            "5-conv VGG-BN for CIFAR-10 with a narrow layer early, so a split pays; the built-in demo model",
            32,
            10,
            lambda: CifarVGG(TINYSPLIT_CFG),
            "cifar10",
        ),
        ZooEntry(
            "resnet18",
            "torchvision ResNet-18, 224x224, cut at block boundaries",
            224,
            1000,
            lambda: _torchvision("resnet18"),
            "imagenet",
        ),
        ZooEntry(
            "mobilenet_v2",
            "torchvision MobileNetV2, 224x224, cut at block boundaries",
            224,
            1000,
            lambda: _torchvision("mobilenet_v2"),
            "imagenet",
        ),
    ]
}


def get_entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise CpcdrlError(f"unknown model {name!r}; known: {', '.join(ZOO)}")
    return ZOO[name]


def build_model(name: str) -> UnitModel:
    """A fresh, randomly initialised zoo model in eval mode."""
    model = get_entry(name).build()
    model.eval()
    return model


def extract_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict, or one under ``net`` / ``state_dict`` / ``model``; strip ``module.``."""
    if isinstance(obj, dict):
        for key in ("net", "state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()) or not obj:
        raise CpcdrlError(
            "checkpoint holds no state_dict (expected tensors, or a dict with 'net', 'state_dict' or 'model')"
        )
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_checkpoint(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load weights into ``model``; refuse a checkpoint of another architecture.

    Returns the checkpoint's metadata (``acc``, ``epoch`` where present).
    """
    path = Path(path)
    if not path.is_file():
        raise CpcdrlError(f"checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or not a torch file
        first = (str(exc).splitlines() or [""])[0]
        raise CpcdrlError(
            f"{path} is not a PyTorch checkpoint ({type(exc).__name__}{': ' + first if first else ''})"
        ) from None
    sd = extract_state_dict(raw)
    if isinstance(model, TorchvisionUnits) and not any(k.startswith("net.") for k in sd):
        sd = {f"net.{k}": v for k, v in sd.items()}  # plain torchvision checkpoints
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(
                f"missing {', '.join(missing[:3])}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
            )
        if unexpected:
            parts.append(
                f"unexpected {', '.join(unexpected[:3])}"
                + (f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else "")
            )
        raise CpcdrlError(f"checkpoint {path.name} does not fit this architecture: {'; '.join(parts)}")
    bad = [k for k in own if own[k].shape != sd[k].shape]
    if bad:
        k = bad[0]
        raise CpcdrlError(
            f"checkpoint {path.name} does not fit this architecture: {k} has shape {tuple(sd[k].shape)}, expected"
            f" {tuple(own[k].shape)}"
        )
    model.load_state_dict(sd)
    meta = {k: raw[k] for k in ("acc", "epoch") if isinstance(raw, dict) and k in raw}
    return meta


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(name: str, checkpoint: str | Path | None = None) -> UnitModel:
    """Build a zoo model and, if given, load a checkpoint into it (eval mode)."""
    model = build_model(name)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    model.eval()
    return model


def device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s weights live (search may run on a GPU; export and the tests on the CPU)."""
    return next(model.parameters()).device


DEMO_MODEL = "tinysplit"


def builtin_checkpoint(model: str) -> Path | None:
    """The checkpoint shipped with the package for ``model``, if any."""
    p = resources.files("cpcdrl_deploy") / "assets" / f"{model}-cifar10.pth"
    return Path(str(p)) if p.is_file() else None


def resolve_checkpoint(model: str, checkpoint: str | Path | None, required: bool) -> Path | None:
    get_entry(model)  # an unknown model is named as such, not as a missing checkpoint
    if checkpoint is not None and str(checkpoint) != "builtin":
        return Path(checkpoint)
    found = builtin_checkpoint(model)
    if found is None and (required or checkpoint is not None):
        raise CpcdrlError(f"no --checkpoint given and no built-in checkpoint for {model!r} (built-in: {DEMO_MODEL})")
    return found


def list_models() -> list[dict[str, Any]]:
    return [
        {
            "name": e.name,
            "input_size": e.input_size,
            "classes": e.num_classes,
            "dataset": e.dataset,
            "builtin_checkpoint": builtin_checkpoint(e.name) is not None,
            "description": e.description,
        }
        for e in ZOO.values()
    ]
