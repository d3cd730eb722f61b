"""ondevice/prepare.py: frames prepared with numpy on the device as models/data.Preprocess prepares them with torch."""

from __future__ import annotations

import numpy as np
import pytest

from cpcdrl_deploy.deploy.inputs import DeviceInputs
from cpcdrl_deploy.models.data import IMAGENET_MEAN, IMAGENET_STD, Preprocess, load_images
from cpcdrl_deploy.ondevice.prepare import prepare


@pytest.mark.parametrize(
    "h, w, size, resize",
    [
        (32, 32, 32, None),
        (32, 32, 96, None),
        (48, 40, 32, None),
        (40, 48, 32, 36),
        (224, 300, 96, 110),
        (17, 23, 64, None),
    ],
)
def test_numpy_matches_torch(h, w, size, resize) -> None:
    """Up- and downsampling, crops either way, the resize-then-crop path: equal to float rounding."""
    frames = np.random.default_rng(h * w).integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    prep = Preprocess(size=size, resize=resize, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    want = prep.apply(frames).numpy()
    got = prepare(frames, prep.to_dict())
    assert got.dtype == np.float32 and got.shape == want.shape == (3, 3, size, size)
    assert np.abs(got - want).max() < 2e-5


def test_only_uint8_frames() -> None:
    with pytest.raises(ValueError, match="uint8 N x H x W x 3"):
        prepare(np.zeros((2, 3, 32, 32), np.float32), Preprocess().to_dict())


def test_device_inputs_send_frames_and_say_how(tmp_path) -> None:
    """Frames of one size travel as uint8 with the preprocessing beside them; a later float run removes the sidecar."""
    images = load_images("builtin").test
    given = DeviceInputs.pick(images, np.arange(8))
    path = given.save(tmp_path / "inputs.npy")
    assert np.load(path).dtype == np.uint8 and (tmp_path / "inputs.json").exists()
    assert np.abs(prepare(np.load(path), given.preprocess) - given.prepared.numpy()).max() < 2e-5
    DeviceInputs(given.prepared, None, given.preprocess).save(path)
    assert np.load(path).dtype == np.float32 and not (tmp_path / "inputs.json").exists()
