"""Promise: every integer dtype, byte order, layout and input form refines exactly as its plain twin, or is refused
with a message that names what arrived (docs/security.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segfix
from helpers import image_and_labels, voronoi_labels
from segfix.metrics import SegmentationMetrics


def _wrap_case():
    labels = np.array([[0, 0, 1, 1]], np.uint8)
    offsets = np.zeros((2, 1, 4), np.int8)
    offsets[1, 0, 1], offsets[1, 0, 2] = 1, -1
    return labels, offsets


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64, np.int16, np.int32])
def test_vote_model_accepts_every_integer_label_dtype(tiny_vote_model, dtype):
    image, labels = image_and_labels()
    expected = tiny_vote_model.refine(image, labels.astype(np.int64))
    out = tiny_vote_model.refine(image, labels.astype(dtype))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.astype(np.int64), expected)


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64])
def test_wide_unsigned_torch_labels_in_refine_semantic_and_metrics(dtype):
    labels = voronoi_labels((20, 24), 4, 3, seed=4)
    offsets = segfix.boundary_targets(labels, min_pixels=0).offsets()
    expected = segfix.refine_semantic(labels.astype(np.int64), offsets, scale=1)
    out = segfix.refine_semantic(
        torch.from_numpy(labels.astype(np.int64)).to(dtype), torch.from_numpy(offsets), scale=1
    )
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.to(torch.int64).numpy(), expected)
    m = SegmentationMetrics(5)
    m.update(torch.from_numpy(expected).to(dtype), torch.from_numpy(labels.astype(np.int64)).to(dtype))
    assert np.isfinite(m.compute().miou)


def test_a_mirrored_view_refines_like_a_copy(tiny_vote_model):
    image, labels = image_and_labels(5)
    mirrored_image, mirrored_labels = image[:, ::-1], np.fliplr(labels)
    out = tiny_vote_model.refine(mirrored_image, mirrored_labels)
    np.testing.assert_array_equal(out, tiny_vote_model.refine(mirrored_image.copy(), mirrored_labels.copy()))


@pytest.mark.parametrize("ignore", [256, -1, 1000])
def test_an_ignore_index_the_dtype_cannot_hold_ignores_nothing(ignore):
    labels, offsets = _wrap_case()
    expected = segfix.refine_semantic(labels, offsets, scale=1, ignore_index=None)
    np.testing.assert_array_equal(expected, [[0, 1, 0, 1]])
    np.testing.assert_array_equal(segfix.refine_semantic(labels, offsets, scale=1, ignore_index=ignore), expected)
    out = segfix.refine_semantic(torch.from_numpy(labels), torch.from_numpy(offsets), scale=1, ignore_index=ignore)
    np.testing.assert_array_equal(out.numpy(), expected)
    prob = np.zeros((8, 1, 4), np.float32)
    prob[4] = 1.0  # everyone looks right
    moving = np.ones((1, 4), bool)
    plain = segfix.vote_labels(labels, prob, moving, ignore_index=None)
    np.testing.assert_array_equal(segfix.vote_labels(labels, prob, moving, ignore_index=ignore), plain)
    torch_vote = segfix.vote_labels(
        torch.from_numpy(labels), torch.from_numpy(prob), torch.from_numpy(moving), ignore_index=ignore
    )
    np.testing.assert_array_equal(torch_vote.numpy(), plain)


def test_flip_direction_on_uint8_and_its_range_check():
    np.testing.assert_array_equal(segfix.flip_direction(np.array([[7, 0]], np.uint8)), [[5, 4]])
    assert segfix.flip_direction(np.array([[7, 0]], np.uint8)).dtype == np.uint8
    with pytest.raises(ValueError, match=r"direction: expected classes in 0\.\.3"):
        segfix.flip_direction(np.array([[7]]), 4)
    with pytest.raises(TypeError, match="direction"):
        segfix.flip_direction(np.array([[1.5]]))


@pytest.mark.parametrize(
    "value, dtype, scale",
    [
        (2**62, np.int64, 2),
        (np.iinfo(np.int64).max, np.int64, 1),
        (np.iinfo(np.int64).min, np.int64, 3),
        (1, np.int64, 2**62),
        (2**64 - 1, np.uint64, 2),
        (2**31 - 1, np.int32, 2**40),
    ],
)
def test_huge_offsets_and_scales_clamp_to_the_border(value, dtype, scale):
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    offsets = np.zeros((2, 3, 4), dtype)
    offsets[1, 1, 1] = value
    # reference in exact Python integers
    expected = labels.copy()
    x = min(max(1 + scale * int(value), 0), 3)
    expected[1, 1] = labels[1, x]
    np.testing.assert_array_equal(segfix.shift_labels(labels, offsets, scale=scale), expected)
    torch_out = segfix.shift_labels(torch.from_numpy(labels), torch.from_numpy(offsets), scale=scale)
    np.testing.assert_array_equal(torch_out.numpy(), expected)


def test_big_endian_inputs_give_native_results():
    labels = voronoi_labels((20, 24), 4, 3, seed=6)
    offsets = segfix.boundary_targets(labels, min_pixels=0).offsets()
    expected = segfix.shift_labels(labels.astype(np.int32), offsets.astype(np.int16))
    out = segfix.shift_labels(labels.astype(">i4"), offsets.astype(">i2"))
    assert out.dtype == np.dtype(">i4")
    np.testing.assert_array_equal(out, expected)
    targets = segfix.boundary_targets(labels.astype(">i4"), min_pixels=0)
    np.testing.assert_array_equal(targets.offsets(), offsets)


def test_empty_maps():
    empty = torch.zeros((0, 0), dtype=torch.uint8)
    assert segfix.shift_labels(empty, torch.zeros((2, 0, 0), dtype=torch.int8)).shape == (0, 0)
    assert segfix.shift_labels(np.zeros((0, 5), np.uint8), np.zeros((2, 0, 5), np.int8)).shape == (0, 5)
    with pytest.raises(ValueError, match="label: expected a map of at least 1x1"):
        segfix.boundary_targets(np.zeros((0, 0), np.uint8))


@pytest.mark.parametrize(
    "make, shown",
    [
        (lambda img: img.float(), "[0, 255]"),  # 0..255 floats
        (lambda img: (img.float() / 255 - 0.45) / 0.225, "[-2, 2.444]"),  # ImageNet-normalised
        (lambda img: torch.where(img > 100, float("nan"), img.float() / 255), "nan"),
        (lambda img: torch.where(img > 100, float("inf"), img.float() / 255), "inf"),
    ],
)
def test_float_images_outside_the_unit_range_are_refused(tiny_vote_model, make, shown):
    image, labels = image_and_labels()
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    tensor[0, 0, 0], tensor[0, 0, 1] = 0, 255
    with pytest.raises(ValueError, match=r"^image: expected float values in \[0, 1\], got values in") as info:
        tiny_vote_model.refine(make(tensor), torch.from_numpy(labels))
    assert shown in str(info.value)
    unit = tensor.float() / 255  # the documented form gives what its uint8 twin gives
    np.testing.assert_array_equal(
        tiny_vote_model.refine(unit, torch.from_numpy(labels)).numpy(), tiny_vote_model.refine(image, labels)
    )


def test_sixteen_bit_grey_images_are_read_by_their_range(tmp_path):
    from segfix.data.files import read_image

    grey = np.linspace(0, 65535, 60, dtype=np.uint16).reshape(6, 10)
    _write(tmp_path / "g16.png", grey)
    expected = np.rint(grey / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png"), np.repeat(expected[..., None], 3, 2))
    _write(tmp_path / "g8.png", expected)  # its 8-bit twin reads the same
    np.testing.assert_array_equal(read_image(tmp_path / "g8.png"), read_image(tmp_path / "g16.png"))
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match="expected an 8- or 16-bit image, got a float image"):
        read_image(tmp_path / "f.tif")


def test_refine_takes_pil_label_maps_bool_masks_and_grey_or_rgba_images(tiny_vote_model):
    """Every common form of an image or a label map, refined as its plain twin is, and handed back in its form."""
    image, labels = image_and_labels()
    expected = tiny_vote_model.refine(image, labels)
    palette = Image.fromarray(labels)
    palette.putpalette([v for c in range(256) for v in (c, 255 - c, c // 2)])
    palette.info["transparency"] = 3
    out = tiny_vote_model.refine(image, palette)
    assert isinstance(out, Image.Image) and out.mode == "P" and out.getpalette() == palette.getpalette()
    assert out.info.get("transparency") == 3
    np.testing.assert_array_equal(np.asarray(out), expected)
    mask = labels > 2
    refined_mask = tiny_vote_model.refine(image, mask)
    assert refined_mask.dtype == np.bool_
    np.testing.assert_array_equal(refined_mask, tiny_vote_model.refine(image, mask.astype(np.uint8)).astype(bool))
    tensor_mask = tiny_vote_model.refine(image, torch.from_numpy(mask))
    assert tensor_mask.dtype == torch.bool and torch.equal(tensor_mask, torch.from_numpy(refined_mask))
    grey = image[..., 1]
    np.testing.assert_array_equal(
        tiny_vote_model.refine(grey, labels), tiny_vote_model.refine(np.dstack([grey] * 3), labels)
    )
    rgba = np.dstack([image, np.full(grey.shape, 7, np.uint8)])
    np.testing.assert_array_equal(tiny_vote_model.refine(rgba, labels), expected)
    with pytest.raises(ValueError, match="expected shape \\(H, W, 3\\) RGB, \\(H, W, 4\\) RGBA or \\(H, W\\) grey"):
        tiny_vote_model.refine(image[..., :2], labels)
    with pytest.raises(ValueError, match="^label_map: expected a single-channel label-id image .* got mode RGB"):
        tiny_vote_model.refine(image, Image.fromarray(image))
