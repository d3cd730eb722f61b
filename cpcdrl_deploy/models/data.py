"""Image classification data from the layouts people have on disk, as tensors preprocessed for one model.

Accepted ``--data`` values:
- a directory in the torchvision ``ImageFolder`` layout (``train/<class>/*.jpg``
  and ``test/<class>/*.jpg`` or ``val/<class>/*.jpg``), any number of classes
  (at least two; the folder names, sorted, are the class indices) and images
  of any size, e.g. ``../shared/datasets/cifar10-jpeg.tar.gz`` unpacked; or
  one folder of class folders, split into train and test by seed;
- that ``.tar.gz`` archive itself (unpacked once into ``~/.cache/cpcdrl``);
- a directory holding torchvision's python format (``cifar-10-batches-py``);
- ``builtin``: the few hundred images shipped inside the package (demo and tests).
An existing *empty* directory is downloaded into by torchvision where a
network exists; a path that does not exist is an error (a typo must not
start a download).
"""

from __future__ import annotations

import dataclasses
import os
import tarfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpcdrl_deploy.core.errors import CpcdrlError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's convention for its ImageNet models
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
HELD_OUT = 0.2  # of a single folder of class folders: the test split


@dataclass(frozen=True)
class Preprocess:
    """What turns an RGB image into a model's input: resize the shorter side to ``resize`` (default ``size``,
    bilinear, as torchvision's ``Resize`` on tensors), centre-crop ``size`` x ``size``, scale to [0, 1], normalise.

    Recorded in the plan and the export manifest, so the device prepares its
    images the same way. CIFAR images at 32 px go through untouched but for
    the normalisation.
    """

    size: int = 32
    mean: tuple[float, float, float] = CIFAR_MEAN
    std: tuple[float, float, float] = CIFAR_STD
    resize: int | None = None

    def apply(self, images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        """uint8 H x W x 3 images (one array of equal sizes, or a list) -> normalised float32 N x 3 x size x size."""
        if isinstance(images, list) and len({im.shape for im in images}) == 1:
            images = np.stack(images)  # one size (a CIFAR folder): one batch, not one resize per image
        if isinstance(images, np.ndarray):
            return self._normalise(self._fit(_to_float(images)))
        return self._normalise(torch.cat([self._fit(_to_float(im[None])) for im in images])) if images else _empty(self)

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if (h, w) == (self.size, self.size) and self.resize in (None, self.size):
            return x
        short = self.resize or self.size
        x = torch.nn.functional.interpolate(
            x, size=(max(short, round(h * short / min(h, w))), max(short, round(w * short / min(h, w)))),
            mode="bilinear", align_corners=False,
        )  # fmt: skip
        top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
        return x[..., top : top + self.size, left : left + self.size]

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "resize": self.resize, "mean": list(self.mean), "std": list(self.std)}


CIFAR = Preprocess()


def _to_float(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float().div_(255.0)


def _empty(prep: Preprocess) -> torch.Tensor:
    return torch.zeros(0, 3, prep.size, prep.size)


@dataclass
class ImageSet:
    """One split: labels in memory, pixels decoded on demand (uint8 HWC)."""

    labels: np.ndarray
    files: list[Path] | None = None  # ImageFolder: decoded lazily
    pixels: np.ndarray | None = None  # N x H x W x 3 uint8 when already in memory
    prep: Preprocess = CIFAR  # how tensors() prepares them for the model at hand

    def __len__(self) -> int:
        return len(self.labels)

    def uint8(self, indices: np.ndarray | list[int]) -> np.ndarray | list[np.ndarray]:
        """The images at ``indices`` as stored: one uint8 array in memory, or a list decoded from files (any sizes)."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.pixels is not None:
            return self.pixels[idx]
        from PIL import Image

        assert self.files is not None
        out = []
        for i in idx:
            try:
                with Image.open(self.files[i]) as im:
                    out.append(np.array(im.convert("RGB")))  # a writable copy: torch wraps it without copying
            except OSError as exc:
                raise CpcdrlError(f"cannot read image {self.files[i]}: {exc}") from None
        return out

    def digest(self, indices: np.ndarray | list[int]) -> str:
        """Identity of the images at ``indices`` and their labels, for the accuracy cache.

        Pixels in memory are hashed; image files by name, size and
        modification time (decoding 10,000 JPEGs only to hash them would cost
        more than a cache hit saves).
        """
        import hashlib

        idx = np.asarray(indices, dtype=np.int64)
        h = hashlib.sha256(self.labels[idx].astype(np.int64).tobytes())
        if self.prep != CIFAR:  # the same files prepared for another input are other tensors
            h.update(repr(self.prep).encode())
        if self.pixels is not None:
            h.update(np.ascontiguousarray(self.pixels[idx]).tobytes())
        else:
            assert self.files is not None
            for i in idx:
                st = self.files[i].stat()
                h.update(f"{self.files[i].parent.name}/{self.files[i].name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def tensors(self, indices: np.ndarray | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed float32 NCHW images (``prep``) and int64 labels for ``indices``."""
        return self.prep.apply(self.uint8(indices)), torch.as_tensor(
            self.labels[np.asarray(indices, dtype=np.int64)], dtype=torch.int64
        )


def normalize(pixels: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 CIFAR images -> normalised float32 N x 3 x H x W."""
    return CIFAR.apply(pixels)


@dataclass
class ImageData:
    """A train and a test split, their class names (index order) and where they came from."""

    train: ImageSet
    test: ImageSet
    source: str
    classes: tuple[str, ...] = CIFAR_CLASSES

    def prepared(self, prep: Preprocess) -> ImageData:
        """The same images, prepared for a model whose input ``prep`` describes."""
        return dataclasses.replace(
            self, train=dataclasses.replace(self.train, prep=prep), test=dataclasses.replace(self.test, prep=prep)
        )


def _class_files(folder: Path) -> dict[str, list[Path]]:
    return {
        d.name: sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        for d in sorted(folder.iterdir())
        if d.is_dir()
    }


def _image_set(by_class: dict[str, list[Path]], classes: list[str]) -> ImageSet:
    files = [f for c in classes for f in by_class.get(c, [])]
    labels = [i for i, c in enumerate(classes) for _ in by_class.get(c, [])]
    return ImageSet(labels=np.asarray(labels, dtype=np.int64), files=files)


def _image_folder(root: Path, test_name: str | None, seed: int = 0) -> ImageData:
    """``root/train`` and ``root/<test_name>``, or (``test_name`` None) one folder of class folders split by seed."""
    if test_name is None:
        by_class = _class_files(root)
        classes = sorted(by_class)
        _check_classes(root, classes, by_class)
        rng = np.random.default_rng(seed)
        train, test = {}, {}
        for c in classes:
            order = rng.permutation(len(by_class[c]))
            n_test = max(1, int(round(HELD_OUT * len(order))))
            test[c] = [by_class[c][i] for i in sorted(order[:n_test])]
            train[c] = [by_class[c][i] for i in sorted(order[n_test:])]
        return ImageData(_image_set(train, classes), _image_set(test, classes), f"imagefolder:{root}", tuple(classes))
    tr, te = _class_files(root / "train"), _class_files(root / test_name)
    classes = sorted(tr)
    _check_classes(root / "train", classes, tr)
    if sorted(te) != classes:
        raise CpcdrlError(f"{root}: train/ and {test_name}/ have different class folders")
    return ImageData(_image_set(tr, classes), _image_set(te, classes), f"imagefolder:{root}", tuple(classes))


def _check_classes(folder: Path, classes: list[str], by_class: dict[str, list[Path]]) -> None:
    if len(classes) < 2:
        raise CpcdrlError(f"{folder} has {len(classes)} class folder(s); a classifier needs at least 2")
    empty = [c for c in classes if not by_class[c]]
    if empty:
        raise CpcdrlError(f"{folder}: class folder {empty[0]!r} holds no .jpg/.jpeg/.png image")


_PICKLE_GLOBALS = {  # all a CIFAR-10 batch pickles: numpy arrays inside a dict of lists
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


def _restricted_load(f) -> object:
    """``pickle.load`` that builds only numpy arrays and plain containers: a file given by --data cannot run code."""
    import pickle

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
            if (module, name) in _PICKLE_GLOBALS:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} (only numpy arrays belong in a CIFAR-10 batch)"
            )

    return Restricted(f, encoding="latin1").load()


def _python_format(root: Path) -> ImageData:
    """torchvision's ``cifar-10-batches-py``: pickled dicts of N x 3072 uint8 rows and labels (read with a restricted
    unpickler)."""
    import pickle

    base = root / "cifar-10-batches-py"

    def read(names: list[str]) -> ImageSet:
        xs, ys = [], []
        for n in names:
            try:
                with open(base / n, "rb") as f:
                    entry: Any = _restricted_load(f)  # a dict of the CIFAR batch; anything else raises below
                xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                ys += list(entry["labels"])
            except (OSError, KeyError, ValueError, TypeError, EOFError, pickle.UnpicklingError) as exc:
                raise CpcdrlError(f"cannot read {base / n}: {exc}") from None
        return ImageSet(np.asarray(ys, dtype=np.int64), pixels=np.ascontiguousarray(np.concatenate(xs)))

    return ImageData(read([f"data_batch_{i}" for i in range(1, 6)]), read(["test_batch"]), f"torchvision:{root}")


def _builtin() -> ImageData:
    with resources.as_file(resources.files("cpcdrl_deploy") / "assets" / "cifar10-sample.npz") as p:
        z = np.load(p)
        return ImageData(
            ImageSet(z["train_y"].astype(np.int64), pixels=z["train_x"]),
            ImageSet(z["test_y"].astype(np.int64), pixels=z["test_x"]),
            "builtin",
        )


def _extract(archive: Path) -> Path:
    cache = Path(os.environ.get("CPCDRL_CACHE", Path.home() / ".cache" / "cpcdrl")) / archive.name.split(".")[0]
    if not (cache / ".complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(archive) as tf:
                tf.extractall(cache, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise CpcdrlError(f"cannot unpack {archive}: {exc}") from None
        (cache / ".complete").touch()
    return cache


def load_images(data: str | Path, prep: Preprocess = CIFAR) -> ImageData:
    """Open the images at ``data`` (see the module docstring for what it may be), prepared as ``prep`` says."""
    return _open(data).prepared(prep)


def _open(data: str | Path) -> ImageData:
    if str(data) == "builtin":
        return _builtin()
    root = Path(data).expanduser()
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz", ".tar")):
        root = _extract(root)
    if root.is_dir():
        # an archive may wrap the splits in one top-level folder
        candidates = [root] + [d for d in sorted(root.iterdir()) if d.is_dir()]
        for c in candidates:
            test = next((t for t in ("test", "val") if (c / t).is_dir()), None)
            if (c / "train").is_dir() and test is not None:
                return _image_folder(c, test)
            if (c / "cifar-10-batches-py").is_dir():
                return _python_format(c)
        subdirs = [d for d in root.iterdir() if d.is_dir()]
        if subdirs and all(any(f.suffix.lower() in IMAGE_EXTS for f in d.iterdir()) for d in subdirs):
            return _image_folder(root, None)  # one folder of class folders: split by seed
    elif root.exists():
        raise CpcdrlError(f"--data {data}: not a directory or a .tar.gz archive")
    else:
        # a typo must not start a download or leave a directory behind
        raise CpcdrlError(
            f"--data {data}: no such file or directory (give 'builtin', an ImageFolder or its .tar.gz, "
            "or an existing empty directory to download CIFAR-10 into)"
        )
    if any(root.iterdir()):
        raise CpcdrlError(
            f"--data {data}: no images here (an ImageFolder: train/ and test/ or val/, or class folders; "
            "cifar-10-batches-py; or a .tar.gz of one); an empty directory is downloaded CIFAR-10 into"
        )
    # An existing empty directory: torchvision's own download path, where a network exists.
    try:
        import torchvision

        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        torchvision.datasets.CIFAR10(str(root), train=False, download=True)
    except Exception as exc:
        raise CpcdrlError(
            f"--data {data}: no CIFAR-10 found (ImageFolder train/ test/, cifar-10-batches-py, or a .tar.gz) and the"
            f" download failed: {str(exc).splitlines()[0]}"
        ) from None
    return _python_format(root)


def split_train(n_train: int, val_size: int, calib_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint validation and calibration indices, both from the training split.

    Accuracy during search is measured on ``val``; the least-squares refit samples
    its feature maps from ``calib``; neither touches the test images. The
    calibration images are the first of the seeded shuffle and validation
    comes after them, so every command that refits or quantises (optimize,
    evaluate, export, deploy) calibrates on the same images for a seed,
    whatever its validation size.
    """
    if val_size + calib_size > n_train:
        raise CpcdrlError(
            f"validation ({val_size}) + calibration ({calib_size}) images exceed the {n_train} training images"
        )
    perm = np.random.default_rng(seed).permutation(n_train)
    return np.sort(perm[calib_size : calib_size + val_size]), np.sort(perm[:calib_size])


def search_split(n_train: int, val_size: int, calib_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """optimize's validation and calibration indices: validation at most half the training split, calibration
    shrunk to what is left; export replays a plan's refit from the same call."""
    val_size = min(val_size, n_train // 2)
    return split_train(n_train, val_size, min(calib_size, n_train - val_size), seed)


def subset(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """The first ``limit`` of a seeded, class-balanced-in-expectation shuffle of range(n)."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise CpcdrlError("--limit must be at least 1")
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])
