"""Input checks: each refusal names what was expected and what arrived; each bound is enforced at its edge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segfix.checks import check_class_ids, check_guard_classes, check_label_map, check_scale, describe, effective_ignore


def test_describe_names_type_dtype_shape_and_device():
    assert describe(np.zeros((2, 3), np.uint16)) == "numpy.ndarray(dtype=uint16, shape=(2, 3))"
    assert describe(torch.zeros(4, dtype=torch.int64)) == "torch.Tensor(dtype=torch.int64, shape=(4,), device=cpu)"
    assert describe([1, 2]) == "list"


def test_scale_and_guard_classes():
    assert check_scale(np.int32(2)) == 2
    with pytest.raises(ValueError, match="scale"):
        check_scale(0)
    assert (
        check_guard_classes([3, 1]) == (1, 3)
        and check_guard_classes("auto") == "auto"
        and check_guard_classes(None) is None
    )
    with pytest.raises(ValueError, match="thin_guard_classes"):
        check_guard_classes("thin")
    with pytest.raises(ValueError, match="classes"):
        check_class_ids([-1], "classes")


def test_label_maps_refuse_negative_labels_but_the_ignore_label():
    labels = np.array([[0, 1], [2, -1]], np.int16)
    assert check_label_map(labels, -1) == -1
    with pytest.raises(ValueError, match="expected class ids >= 0 or the ignore index 255, found -1"):
        check_label_map(labels, 255)
    with pytest.raises(TypeError, match="expected an integer dtype, got numpy.ndarray"):
        check_label_map(labels.astype(np.float32), 255)
    # an ignore label the dtype cannot hold ignores nothing (uint8 cannot hold -1)
    assert effective_ignore(np.zeros(3, np.uint8), -1) is None and effective_ignore(np.zeros(3, np.uint8), 255) == 255
