"""What the promise tests share: a tiny model that votes and moves every pixel it may."""

from __future__ import annotations

import pytest
import torch

import segfix
from helpers import TINY


@pytest.fixture(scope="module")
def tiny_vote_model():
    torch.manual_seed(0)
    return segfix.SegFix(**TINY).with_settings(direction_vote=True, boundary_threshold=0.0).eval()
