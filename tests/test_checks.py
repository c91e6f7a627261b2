"""Input checks: each refusal names what was expected and what arrived; each bound is enforced at its edge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segfix.checks import (
    check_class_ids,
    check_guard_classes,
    check_int_range,
    check_label_map,
    check_scale,
    describe,
    effective_ignore,
    is_int,
)
from segfix.limits import MAX_SCALE


def test_describe_names_type_dtype_shape_and_device():
    assert describe(np.zeros((2, 3), np.uint16)) == "numpy.ndarray(dtype=uint16, shape=(2, 3))"
    assert describe(torch.zeros(4, dtype=torch.int64)) == "torch.Tensor(dtype=torch.int64, shape=(4,), device=cpu)"
    assert describe([1, 2]) == "list"


def test_int_range_is_inclusive_and_refuses_bools_and_floats():
    assert (
        check_int_range(1, "scale", 1, MAX_SCALE) == 1
        and check_int_range(np.int64(MAX_SCALE), "s", 1, MAX_SCALE) == MAX_SCALE
    )
    for bad in (0, MAX_SCALE + 1, True, 1.0, "2"):
        with pytest.raises(ValueError, match=rf"scale: expected an integer in 1..{MAX_SCALE}, got"):
            check_int_range(bad, "scale", 1, MAX_SCALE)
    assert is_int(np.uint8(3)) and not is_int(True) and not is_int(3.0)


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
