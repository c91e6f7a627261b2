"""Label formats: stored ids -> class ids (255 = ignore) and back, losslessly, against hand-made tables."""

from __future__ import annotations

import numpy as np
import pytest

from segfix.data.registry import LABEL_FORMATS, dataset_from_spec, decode_labels, encode_labels


def test_cityscapes_label_ids_map_to_train_ids_and_back():
    stored = np.array(
        [[7, 8, 11, 0], [26, 33, 1, 24]], np.uint8
    )  # road sidewalk building unlabeled / car bicycle ego person
    classes = encode_labels(stored, "cityscapes-labelid")
    np.testing.assert_array_equal(classes, [[0, 1, 2, 255], [13, 18, 255, 11]])
    refined = classes.copy()
    refined[0, 0] = 1  # a road pixel became sidewalk
    np.testing.assert_array_equal(
        decode_labels(refined, stored, "cityscapes-labelid"), [[8, 8, 11, 0], [26, 33, 1, 24]]
    )


def test_ade20k_shifts_by_one_with_zero_as_ignore_and_a_stored_ignore_is_compared_before():
    stored = np.array([0, 1, 150], np.uint8)
    np.testing.assert_array_equal(encode_labels(stored, "ade20k"), [255, 0, 149])
    trainid = np.array([0, 5, 19], np.uint8)
    np.testing.assert_array_equal(encode_labels(trainid, "trainid", stored_ignore=19), [0, 5, 255])
    np.testing.assert_array_equal(decode_labels(np.array([0, 5, 255]), trainid, "trainid"), trainid)


def test_unknown_formats_and_specs_are_refused_by_name():
    assert set(LABEL_FORMATS) >= {"trainid", "cityscapes-labelid", "ade20k"}
    with pytest.raises(ValueError, match="label format"):
        encode_labels(np.zeros(2, np.uint8), "labelme")
    with pytest.raises(ValueError, match="KIND=ROOT"):
        dataset_from_spec("camvid")
