"""Synthetic label maps and plain references for tests, benchmarks and tools (no data files needed)."""

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


def reference_walk(labels: np.ndarray, offsets: np.ndarray, scale: int = 1, iterations: int = 1) -> np.ndarray:
    """The shift by a plain loop, the specification of :func:`segfix.shift_labels`: ``iterations`` steps
    ``p <- clamp(p + scale * offset[p])`` from every pixel, in Python integers. Maps ``(H, W)`` or ``(N, H, W)``."""
    batched = labels.ndim == 3
    maps = labels if batched else labels[None]
    out = maps.copy()
    n, h, w = maps.shape
    for b in range(n):
        field = offsets if offsets.ndim == 3 else offsets[b]
        for i in range(h):
            for j in range(w):
                y, x = i, j
                for _ in range(iterations):
                    dy, dx = int(field[0, y, x]), int(field[1, y, x])
                    y, x = min(max(y + scale * dy, 0), h - 1), min(max(x + scale * dx, 0), w - 1)
                out[b, i, j] = maps[b, y, x]
    return out if batched else out[0]
