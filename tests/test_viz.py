"""Pictures: palettes, overlays, direction wheel, error map, panels."""

from __future__ import annotations

import numpy as np
import pytest

from segfix import viz


def test_colorize_and_palettes():
    label = np.array([[0, 1], [255, 2]])
    rgb = viz.colorize(label, 3, name="cityscapes")
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[1, 0]) == (0, 0, 0)  # road; ignore is black
    assert tuple(viz.colorize(np.array([[10]]), 11, name="camvid")[0, 0]) == (0, 128, 192)
    big = viz.palette(150, "ade20k")
    assert big.shape == (150, 3) and len({tuple(c) for c in big}) > 140  # distinct colours
    with pytest.raises(ValueError, match="palette"):
        viz.palette(3, "voc")


def test_overlay_direction_error_panel():
    image = np.full((4, 5, 3), 100, np.uint8)
    boundary = np.zeros((4, 5), bool)
    boundary[1, 1] = True
    out = viz.overlay_boundary(image, boundary, color=(200, 0, 0), alpha=0.5)
    assert tuple(out[1, 1]) == (150, 50, 50) and tuple(out[0, 0]) == (100, 100, 100)
    direction = np.array([[0, 4, -1], [2, 6, 7]])
    wheel = viz.direction_wheel(direction, np.array([[1, 1, 1], [1, 1, 0]], bool))
    assert tuple(wheel[0, 2]) == (255, 255, 255) and tuple(wheel[1, 2]) == (255, 255, 255)
    assert tuple(wheel[0, 0]) != tuple(wheel[0, 1])  # left and right differ
    target = np.array([[0, 1, 1, 255]])
    before = np.array([[1, 1, 0, 0]])
    after = np.array([[0, 0, 0, 0]])
    err = viz.error_map(before, after, target)
    assert tuple(err[0, 0]) == (0, 170, 0)  # fixed
    assert tuple(err[0, 1]) == (220, 0, 0)  # broken
    assert tuple(err[0, 2]) == (150, 150, 150)  # still wrong
    sheet = viz.panel([image, out, image], ["a", "b", "c"], columns=2)
    assert sheet.size == (10, 2 * (4 + 22))
    with pytest.raises(ValueError, match="as many titles"):
        viz.panel([image], ["a", "b"])
