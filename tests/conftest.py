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
