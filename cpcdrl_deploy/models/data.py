"""CIFAR-10 from any of the layouts people have on disk, as normalised tensors.

Accepted ``--data`` values:
- a directory in the torchvision ``ImageFolder`` layout (``train/<class>/*.jpg``,
  ``test/<class>/*.jpg``), e.g. ``../shared/datasets/cifar10-jpeg.tar.gz`` unpacked;
- that ``.tar.gz`` archive itself (unpacked once into ``~/.cache/cpcdrl``);
- a directory holding torchvision's python format (``cifar-10-batches-py``);
- ``builtin``: the few hundred images shipped inside the package (demo and tests).
An existing *empty* directory is downloaded into by torchvision where a
network exists; a path that does not exist is an error (a typo must not
start a download).
"""

from __future__ import annotations

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
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


@dataclass
class ImageSet:
    """One split: labels in memory, pixels decoded on demand (uint8 HWC)."""

    labels: np.ndarray
    files: list[Path] | None = None  # ImageFolder: decoded lazily
    pixels: np.ndarray | None = None  # N x 32 x 32 x 3 uint8 when already in memory

    def __len__(self) -> int:
        return len(self.labels)

    def uint8(self, indices: np.ndarray | list[int]) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        if self.pixels is not None:
            return self.pixels[idx]
        from PIL import Image

        assert self.files is not None
        out = np.empty((len(idx), 32, 32, 3), dtype=np.uint8)
        for j, i in enumerate(idx):
            with Image.open(self.files[i]) as im:
                out[j] = np.asarray(im.convert("RGB"))
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
        if self.pixels is not None:
            h.update(np.ascontiguousarray(self.pixels[idx]).tobytes())
        else:
            assert self.files is not None
            for i in idx:
                st = self.files[i].stat()
                h.update(f"{self.files[i].parent.name}/{self.files[i].name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def tensors(self, indices: np.ndarray | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float32 NCHW images and int64 labels for ``indices``."""
        return normalize(self.uint8(indices)), torch.as_tensor(
            self.labels[np.asarray(indices, dtype=np.int64)], dtype=torch.int64
        )


def normalize(pixels: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 -> normalised float32 N x 3 x H x W."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class Cifar10:
    train: ImageSet
    test: ImageSet
    source: str


def _image_folder(split_dir: Path) -> ImageSet:
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if len(classes) != 10:
        raise CpcdrlError(f"{split_dir} has {len(classes)} class folders, CIFAR-10 needs 10")
    files: list[Path] = []
    labels: list[int] = []
    for c, name in enumerate(classes):
        fs = sorted(f for f in (split_dir / name).iterdir() if f.suffix.lower() in IMAGE_EXTS)
        files += fs
        labels += [c] * len(fs)
    return ImageSet(labels=np.asarray(labels, dtype=np.int64), files=files)


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


def _python_format(root: Path) -> Cifar10:
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

    return Cifar10(read([f"data_batch_{i}" for i in range(1, 6)]), read(["test_batch"]), f"torchvision:{root}")


def _builtin() -> Cifar10:
    with resources.as_file(resources.files("cpcdrl_deploy") / "assets" / "cifar10-sample.npz") as p:
        z = np.load(p)
        return Cifar10(
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


def load_cifar10(data: str | Path) -> Cifar10:
    """Open CIFAR-10 from ``data`` (see the module docstring for what it may be)."""
    if str(data) == "builtin":
        return _builtin()
    root = Path(data).expanduser()
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz", ".tar")):
        root = _extract(root)
    if root.is_dir():
        # an archive may wrap the splits in one top-level folder
        candidates = [root] + [d for d in sorted(root.iterdir()) if d.is_dir()]
        for c in candidates:
            if (c / "train").is_dir() and (c / "test").is_dir():
                return Cifar10(_image_folder(c / "train"), _image_folder(c / "test"), f"imagefolder:{c}")
            if (c / "cifar-10-batches-py").is_dir():
                return _python_format(c)
    elif root.exists():
        raise CpcdrlError(f"--data {data}: not a directory or a .tar.gz archive")
    else:
        # a typo must not start a download or leave a directory behind
        raise CpcdrlError(
            f"--data {data}: no such file or directory (give 'builtin', a CIFAR-10 ImageFolder or its .tar.gz, "
            "or an existing empty directory to download CIFAR-10 into)"
        )
    if any(root.iterdir()):
        raise CpcdrlError(
            f"--data {data}: no CIFAR-10 here (ImageFolder train/ and test/, cifar-10-batches-py, or a .tar.gz); "
            "an empty directory is downloaded into"
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
