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


def roi_head_masks(masks: np.ndarray, resolution: int = 28) -> np.ndarray:
    """Coarse instance masks as a Mask R-CNN head draws them: each mask ``(K, H, W)`` bool is cut to its box,
    averaged down to ``resolution`` x ``resolution`` (the head's output, as RoIAlign samples it), resampled back
    to the box and thresholded at 0.5, then pasted where it was. Boxes are the masks' own, so only the shape is
    coarsened."""
    import torch
    import torch.nn.functional as F

    out = np.zeros_like(masks, dtype=bool)
    for k, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if rows.size == 0:
            continue
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        crop = torch.from_numpy(mask[box].astype(np.float32))[None, None]
        # antialiased: each cell averages its part of the box, as RoIAlign's sampling points do
        small = F.interpolate(crop, size=(resolution, resolution), mode="bilinear", antialias=True)
        back = F.interpolate(small, size=crop.shape[-2:], mode="bilinear", align_corners=False)
        out[k][box] = back[0, 0].numpy() >= 0.5
    return out


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
