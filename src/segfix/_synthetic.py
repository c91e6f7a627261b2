"""Synthetic label maps for tests, benchmarks and examples (no data files needed)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def voronoi_labels(
    shape: tuple[int, int], num_regions: int, num_classes: int, seed: int = 0, dtype=np.uint8
) -> np.ndarray:
    """A label map of random Voronoi cells with random classes: blobby regions like a real scene."""
    rng = np.random.default_rng(seed)
    h, w = shape
    ys, xs = rng.integers(0, h, num_regions), rng.integers(0, w, num_regions)
    seeds = np.ones(shape, bool)
    seeds[ys, xs] = False
    iy, ix = ndimage.distance_transform_edt(seeds, return_distances=False, return_indices=True)
    classes = np.zeros(shape, np.int64)
    classes[ys, xs] = rng.integers(0, num_classes, num_regions)
    return classes[iy, ix].astype(dtype)
