"""The model bundled with the package: listed, loads offline with no download, refines the demo image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import segfix
from segfix.pretrained import bundled_model_dir


@pytest.fixture
def bundled():
    if bundled_model_dir("camvid-lite0") is None:
        pytest.skip("the bundled model files are not in this checkout")
    return segfix.SegFix.from_pretrained("camvid-lite0")


def test_listed_and_loads_offline(bundled, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert "camvid-lite0" in segfix.list_models()
    again = segfix.SegFix.from_pretrained("camvid-lite0")
    assert again.config == bundled.config
    card = (bundled_model_dir("camvid-lite0") / "README.md").read_text()
    assert "CamVid" in card and "research" in card.lower()


def test_refines_the_demo_image(bundled):
    from importlib import resources

    assets = resources.files("segfix") / "assets"
    image = np.asarray(Image.open(assets / "coffee.jpg").convert("RGB"))
    coarse = np.asarray(Image.open(assets / "coffee_coarse.png"))
    refined = bundled.refine(image, coarse)
    assert refined.shape == coarse.shape and refined.dtype == coarse.dtype
    changed = (refined != coarse).mean()
    assert 0 < changed < 0.2  # it moves some boundary pixels, never whole regions
    assert set(np.unique(refined)) <= set(np.unique(coarse))
