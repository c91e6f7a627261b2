"""The bounds and the one range check of a plain number: inclusive at both ends, no bools, no floats, no strings."""

from __future__ import annotations

import numpy as np
import pytest

from segfix.limits import MAX_SCALE, check_int_range, is_int


def test_int_range_is_inclusive_and_refuses_bools_and_floats():
    assert (
        check_int_range(1, "scale", 1, MAX_SCALE) == 1
        and check_int_range(np.int64(MAX_SCALE), "s", 1, MAX_SCALE) == MAX_SCALE
    )
    for bad in (0, MAX_SCALE + 1, True, 1.0, "2"):
        with pytest.raises(ValueError, match=rf"scale: expected an integer in 1..{MAX_SCALE}, got"):
            check_int_range(bad, "scale", 1, MAX_SCALE)
    assert is_int(np.uint8(3)) and not is_int(True) and not is_int(3.0)
