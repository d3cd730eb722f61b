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

import dataclasses
import hashlib
import importlib
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.models.data import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from cpcdrl_deploy.models.fxgraph import graph_units

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


class GraphModel(UnitModel):
    """Any torch.fx-traceable classifier, its units found from its graph (``models/fxgraph.py``): no list per
    architecture. Its ``state_dict`` is the wrapped network's under ``net.``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def units(self) -> list[Unit]:
        return [Unit(name, fn, mods) for name, fn, mods in graph_units(self.net)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _BasicBlock(nn.Module):
    """pytorch-cifar's ResNet ``BasicBlock``: two 3x3 convs and a shortcut (a 1x1 conv where the shape changes)."""

    def __init__(self, c_in: int, c: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet (ResNet-20: 3 stages of 3 blocks), pytorch-cifar layout (``../shared/models``)."""

    def __init__(self, blocks: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, c_in = [], 16
        for c, stride in ((16, 1), (32, 2), (64, 2)):
            layers = []
            for b in range(blocks):
                layers.append(_BasicBlock(c_in, c, stride if b == 0 else 1))
                c_in = c
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    input_size: int  # square image side in pixels
    num_classes: int  # the default; a checkpoint's own count wins (load_model)
    build: Callable[[int], UnitModel]  # num_classes -> a fresh model
    dataset: str  # what it is meant for: "cifar10" or "imagenet"


def _torchvision(arch: str, num_classes: int) -> UnitModel:
    import torchvision

    return GraphModel(getattr(torchvision.models, arch)(weights=None, num_classes=num_classes))


def _torchvision_entry(arch: str, what: str) -> ZooEntry:
    return ZooEntry(
        arch,
        f"torchvision {what}, 224x224 by default (--input-size), cut where one tensor crosses",
        224,
        1000,
        lambda n: _torchvision(arch, n),
        "imagenet",
    )


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry(
            "vgg16", "VGG16-BN for CIFAR-10 (pytorch-cifar layout)", 32, 10, lambda n: CifarVGG(VGG16_CFG, n), "cifar10"
        ),
        ZooEntry("mobilenet", "MobileNet v1 for CIFAR-10 (pytorch-cifar layout)", 32, 10, CifarMobileNet, "cifar10"),
        ZooEntry(
            "resnet20",
            "ResNet-20 for CIFAR-10 (pytorch-cifar layout, residual: cut at block boundaries)",
            32,
            10,
            lambda n: GraphModel(CifarResNet(3, n)),
            "cifar10",
        ),
        ZooEntry(
            "tinyvgg",
            "6-conv VGG-BN for CIFAR-10, shipped with weights",
            32,
            10,
            lambda n: CifarVGG(TINYVGG_CFG, n),
            "cifar10",
        ),
        ZooEntry(
            "tinysplit",
            "5-conv VGG-BN for CIFAR-10 with a narrow layer early, so a split pays; the built-in demo model",
            32,
            10,
            lambda n: CifarVGG(TINYSPLIT_CFG, n),
            "cifar10",
        ),
        _torchvision_entry("resnet18", "ResNet-18"),
        _torchvision_entry("resnet50", "ResNet-50"),
        _torchvision_entry("mobilenet_v2", "MobileNetV2"),
        _torchvision_entry("mobilenet_v3_small", "MobileNetV3-Small"),
        _torchvision_entry("mobilenet_v3_large", "MobileNetV3-Large"),
        _torchvision_entry("efficientnet_b0", "EfficientNet-B0"),
        _torchvision_entry("regnet_x_400mf", "RegNetX-400MF"),
    ]
}


def split_key(model: str) -> tuple[str, int | None]:
    """A model key is a zoo name or a factory (``package.module:function``), optionally ``:SIZE`` for its input side
    (``mobilenet_v2:96``): the key plans and profiles name it by, since tables at one size say nothing of another."""
    base, sep, size = model.rpartition(":")
    if sep and size.isdigit():
        return base, int(size)
    return model, None


def model_key(model: str, input_size: int | None) -> str:
    """``model`` at ``input_size`` as a key (the bare name where the size is the entry's own, or not given)."""
    base, size = split_key(model)
    size = input_size or size
    if size is None or size == get_entry(base).input_size:
        return base
    return f"{base}:{size}"


def get_entry(name: str) -> ZooEntry:
    """The zoo entry of a model key: a zoo name or a factory, at the key's input size (see ``split_key``)."""
    base, size = split_key(name)
    entry = ZOO.get(base) or (_factory_entry(base) if ":" in base else None)
    if entry is None:
        raise CpcdrlError(
            f"unknown model {name!r}: give a zoo name ({', '.join(ZOO)}; cpcdrl models) or package.module:function"
        )
    if size is not None:
        if not 8 <= size <= 2048:
            raise CpcdrlError(f"--input-size {size} is outside 8..2048 pixels")
        entry = dataclasses.replace(entry, name=name, input_size=size)
    return entry


def _factory_entry(spec: str) -> ZooEntry:
    """A user's ``package.module:function`` returning an ``nn.Module`` (imported from the working directory first)."""
    mod_name, _, fn_name = spec.partition(":")
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, "")  # the user's own package, where they run cpcdrl
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except Exception as exc:  # noqa: BLE001 - any import-time failure of the user's code is one line
        raise CpcdrlError(f"cannot import the model factory {spec!r}: {type(exc).__name__}: {exc}") from None
    if not callable(fn):
        raise CpcdrlError(f"model factory {spec!r} is not callable")

    def build(num_classes: int) -> UnitModel:
        try:
            params = inspect.signature(fn).parameters
            net = fn(num_classes=num_classes) if "num_classes" in params else fn()
        except Exception as exc:  # noqa: BLE001 - the user's code: one line naming it
            raise CpcdrlError(f"model factory {spec!r} failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(net, nn.Module):
            raise CpcdrlError(f"model factory {spec!r} returned {type(net).__name__}, not a torch.nn.Module")
        return net if isinstance(net, UnitModel) else GraphModel(net)

    return ZooEntry(spec, f"factory {spec}", 224, 1000, build, "imagefolder")


def preprocess_for(model: str) -> Preprocess:
    """How images become ``model``'s input: its input side, and CIFAR-10's mean and std for the CIFAR models,
    torchvision's ImageNet ones for every other (the convention their weights and the reference checkpoints use)."""
    entry = get_entry(model)
    if entry.dataset == "cifar10":
        return Preprocess(size=entry.input_size)
    return Preprocess(size=entry.input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def build_model(name: str, num_classes: int | None = None) -> UnitModel:
    """A fresh, randomly initialised model in eval mode (the entry's class count unless given)."""
    entry = get_entry(name)
    model = entry.build(num_classes or entry.num_classes)
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


def read_checkpoint(path: str | Path) -> Any:
    """The object a checkpoint file holds (tensors, numbers, strings only), or one error line."""
    path = Path(path)
    if not path.is_file():
        raise CpcdrlError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or not a torch file
        first = (str(exc).splitlines() or [""])[0]
        raise CpcdrlError(
            f"{path} is not a PyTorch checkpoint ({type(exc).__name__}{': ' + first if first else ''})"
        ) from None


def load_checkpoint(model: nn.Module, path: str | Path, raw: Any = None) -> dict[str, Any]:
    """Load weights into ``model``; refuse a checkpoint of another architecture.

    ``raw``: the file's contents where the caller has read them already
    (``read_checkpoint``). Returns the checkpoint's metadata (``acc``,
    ``epoch`` where present).
    """
    path = Path(path)
    raw = read_checkpoint(path) if raw is None else raw
    sd = own_keys(model, extract_state_dict(raw))
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


def own_keys(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain network's checkpoint (torchvision's, pytorch-cifar's, a user's) as a ``GraphModel``'s (``net.``)."""
    if isinstance(model, GraphModel) and not any(k.startswith("net.") for k in sd):
        return {f"net.{k}": v for k, v in sd.items()}
    return sd


def checkpoint_classes(model: nn.Module, raw: Any) -> int | None:
    """The class count a checkpoint (``read_checkpoint``) was trained for: its last linear layer's outputs, None where
    it has none or holds no state_dict (load_checkpoint then says why)."""
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        sd = own_keys(model, extract_state_dict(raw))
    except CpcdrlError:
        return None
    w = sd.get(f"{last[-1]}.weight") if last else None
    return int(w.shape[0]) if w is not None and w.dim() == 2 else None


def load_model(name: str, checkpoint: str | Path | None = None) -> UnitModel:
    """Build a model and, if given, load a checkpoint into it (eval mode); the checkpoint's class count wins."""
    model = build_model(name)
    if checkpoint is not None:
        raw = read_checkpoint(checkpoint)  # read once: its class count, then its weights
        n = checkpoint_classes(model, raw)
        if n is not None and n != get_entry(name).num_classes:
            model = build_model(name, n)
        load_checkpoint(model, checkpoint, raw)
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
