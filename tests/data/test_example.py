"""The bundled example: a permissively licensed photo, a reference map and a coarse map of the same size."""

from __future__ import annotations

import numpy as np

import segfix


def test_the_example_is_consistent_and_its_coarse_map_errs_at_boundaries():
    example = segfix.load_example()
    h, w = example.reference.shape
    assert example.image.shape == (h, w, 3) and example.image.dtype == np.uint8
    assert example.coarse.shape == (h, w)
    wrong = example.coarse != example.reference
    assert 0 < wrong.mean() < 0.2  # a coarse map: mostly right, wrong in places
    # its errors sit near the reference's boundaries, which is what SegFix fixes
    near = segfix.boundary_targets(example.reference).boundary
    assert wrong[near].mean() > wrong[~near].mean()
