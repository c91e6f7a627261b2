"""Pictures: palettes, overlays, direction wheel, error map, panels."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import voronoi_labels
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
    caption = viz.caption_font(5).getbbox("Ag")[3] + 12  # the title strip follows the font
    assert sheet.size == (10, 2 * (4 + caption))
    assert viz.panel([image], ["a"], columns=1, caption_height=22).size == (5, 4 + 22)
    with pytest.raises(ValueError, match="as many titles"):
        viz.panel([image], ["a", "b"])


def test_change_crops_centre_on_the_most_changes_and_zoom():
    from segfix import viz

    before = np.zeros((60, 80), np.uint8)
    after = before.copy()
    after[40:44, 60:64] = 1  # 16 changed pixels here
    after[5, 5] = 1  # one elsewhere
    image = np.zeros((60, 80, 3), np.uint8)
    crops = viz.change_crops([image, viz.colorize(after, 2)], after != before, count=2, size=16, zoom=3)
    assert len(crops) == 2 and crops[0][0].shape == (48, 48, 3)
    # the first crop holds the 4x4 block, magnified 3x: 16 * 9 coloured pixels of class 1
    first = crops[0][1]
    assert (first == viz.colorize(np.ones((1, 1), np.uint8), 2)[0, 0]).all(-1).sum() == 16 * 9
    assert viz.change_crops([image], np.zeros((60, 80), bool)) == []


def test_error_map_grow_thickens_fixes_but_not_grey():
    from segfix import viz

    target = np.zeros((9, 9), np.uint8)
    before = target.copy()
    before[4, 4] = 1  # fixed by after
    before[0, 0] = 1  # still wrong
    after = target.copy()
    after[0, 0] = 1
    plain = viz.error_map(before, after, target)
    grown = viz.error_map(before, after, target, grow=1)
    green = np.array(viz.FIXED, np.uint8)
    assert (plain == green).all(-1).sum() == 1 and (grown == green).all(-1).sum() == 5
    assert (grown[0, 0] == viz.STILL_WRONG).all()
    blue = viz.error_map(before, after)  # no reference: changed pixels
    assert (blue != 255).any(-1).sum() == 1


def test_direction_legend_and_refinement_sheet():
    from segfix import viz

    legend = viz.direction_legend(8, size=64)
    assert legend.shape == (64, 64, 3)
    colours = viz.direction_wheel(np.arange(8)[None])[0]
    for colour in colours:  # every direction's colour is drawn
        assert (legend == colour).all(-1).any()
    truth = voronoi_labels((48, 64), 6, 4, seed=0)
    coarse = truth.copy()
    coarse[:, 2:] = truth[:, :-2]
    image = np.zeros((48, 64, 3), np.uint8)
    sheet = viz.refinement_sheet(image, coarse, truth, truth, palette_name="camvid", crops=2)
    assert sheet.width >= 3 * 64 and sheet.height > 2 * 48  # panels, then rows of zoomed crops


def test_the_sheet_reads_at_readme_width_and_its_keys_cover_no_data():
    """Titles scale with the picture, the direction key sits in the title strip (the direction panel shows every
    drawn pixel), steps that leave the image are not drawn, and the zoomed crops fill the sheet's width."""
    from segfix import viz

    truth = voronoi_labels((300, 600), 8, 4, seed=1)
    coarse = np.roll(truth, 3, axis=1)
    image = np.zeros((300, 600, 3), np.uint8)
    direction = np.full(truth.shape, 4, np.int64)  # every pixel points right (vectors: 4 = (0, 1))
    assert tuple(viz.direction_vectors(8)[4]) == (0, 1)
    moving = np.zeros(truth.shape, bool)
    moving[100:110, :] = True
    sheet = np.asarray(viz.refinement_sheet(image, coarse, truth, truth, direction=direction, moving=moving))
    font = viz.caption_font(600)
    assert font.getbbox("Ag")[3] >= 20  # about 25 px at 600 px: readable when 1800 px shrink to README width
    caption = max(font.getbbox("Ag")[3] + 12, min(72, max(40, 600 // 10)) + 6)
    top = 2 * (300 + caption) - 300  # the direction panel's pixels, below its title strip
    drawn = sheet[top : top + 300, 600:1200]
    expected = viz.direction_wheel(direction, moving & (np.arange(600) < 599)[None, :])
    np.testing.assert_array_equal(drawn, expected)  # no key over it; the last column's step leaves the image
    zoom_rows = sheet[2 * (300 + caption) :]
    used = np.flatnonzero((zoom_rows != 255).any(axis=(0, 2)))
    assert used.max() >= 0.95 * sheet.shape[1]  # four crops fill the width of three panels
