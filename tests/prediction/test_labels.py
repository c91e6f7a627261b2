"""The label space: a caller's label maps as ids and back in their own form; stored encodings as class ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segfix.prediction.labels import CLASS_IGNORE, LabelSpace, label_map_as_ids


def test_pil_and_bool_maps_come_back_in_their_form():
    ids = (np.arange(20).reshape(4, 5) % 3).astype(np.uint8)
    palette_image = Image.fromarray(ids, "L").convert("P")
    palette_image.putpalette([c for i in range(256) for c in (i, 0, 255 - i)])
    got, restore = label_map_as_ids(palette_image)
    np.testing.assert_array_equal(got, ids)
    back = restore(got[::-1].copy())
    assert back.mode == "P" and back.getpalette() == palette_image.getpalette()
    np.testing.assert_array_equal(np.asarray(back), ids[::-1])
    mask = torch.tensor([[True, False], [False, True]])
    got, restore = label_map_as_ids(mask)
    assert got.dtype == torch.uint8 and restore(got).dtype == torch.bool and torch.equal(restore(got), mask)


def test_scores_are_refused_with_the_argmax_hint():
    with pytest.raises(
        TypeError, match=r"logits or scores: pass their argmax over the class axis \(e.g. .argmax\(0\)\)"
    ):
        label_map_as_ids(np.zeros((3, 4, 5), np.float32))


def test_a_label_space_without_a_format_leaves_ids_as_they_are():
    ids = np.array([[0, 1], [2, 255]], np.uint8)
    plain = LabelSpace(ignore_index=None)
    assert plain.encode(ids) is ids and plain.decode(ids, ids) is ids and plain.class_ignore is None
    cityscapes = LabelSpace("cityscapes-labelid")
    assert cityscapes.class_ignore == CLASS_IGNORE
    np.testing.assert_array_equal(cityscapes.encode(np.array([7, 0], np.uint8)), [0, 255])


def test_a_label_space_refuses_what_it_cannot_decode():
    with pytest.raises(ValueError, match="label_format: expected None or one of"):
        LabelSpace("labelme")
    with pytest.raises(ValueError, match="stored_ignore: expected an integer or None, got '0'"):
        LabelSpace("trainid", stored_ignore="0")
