"""Shared fixtures: devices, the optional CamVid and Cityscapes data, and the --runslow switch (references:
helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"
CITYSCAPES = CAMVID.parent / "cityscapes"


try:  # the fuzz suite's profiles; `--hypothesis-profile thorough` runs 50x the default cases
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "default", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
    )
    settings.register_profile("thorough", max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
    settings.load_profile("default")
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _restore_torch_rng():
    state = torch.random.get_rng_state()
    yield
    torch.random.set_rng_state(state)


@pytest.fixture
def camvid() -> Path:
    if not (CAMVID / "valannot").is_dir():
        pytest.skip(f"CamVid data not found at {CAMVID}")
    return CAMVID


@pytest.fixture
def cityscapes() -> Path:
    if not (CITYSCAPES / "gtFine" / "train" / "aachen").is_dir():
        pytest.skip(f"Cityscapes data not found at {CITYSCAPES}")
    return CITYSCAPES


@pytest.fixture
def model():
    """A tiny untrained SegFix (test_resnet backbone, 16 channels), seeded: what the model tests run on unless a
    module names its own."""
    from helpers import TINY16
    from segfix import SegFix

    torch.manual_seed(0)
    return SegFix(**TINY16).eval()


@pytest.fixture
def folders(tmp_path):
    """Three scenes as a user's folders: images, ground truth, coarse predictions (shifted by 2 px) and offsets
    files from the ground truth (.mat for the first, .npz for the others)."""
    from PIL import Image

    import segfix
    from helpers import scene
    from segfix.jobs import formats

    for sub in ("images", "preds", "gt", "offsets"):
        (tmp_path / sub).mkdir()
    for i in range(3):
        image, truth, coarse = scene(i)
        Image.fromarray(image).save(tmp_path / "images" / f"img{i}.png")
        Image.fromarray(truth).save(tmp_path / "gt" / f"img{i}.png")
        Image.fromarray(coarse).save(tmp_path / "preds" / f"img{i}.png")
        offsets = segfix.boundary_targets(truth, min_pixels=0).offsets()
        formats.write_offsets(tmp_path / "offsets" / f"img{i}.{'mat' if i == 0 else 'npz'}", offsets)
    return tmp_path
