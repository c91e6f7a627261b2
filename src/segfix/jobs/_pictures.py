"""The optional picture a refine job writes beside each refined map (``--save-viz``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.files import atomic_write
from ..ops.field import RefinementField

__all__ = ["offsets_to_direction", "write_viz"]


def write_viz(path: Path, image, before, after, field: RefinementField, palette_name, ignore_index) -> None:
    from .. import viz

    if image is None:  # offsets from files: no image was read, show the label maps alone
        image = viz.colorize(before, name=palette_name, ignore_index=ignore_index)
    one = field.numpy()
    sheet = viz.refinement_sheet(
        image,
        before,
        after,
        palette_name=palette_name,
        ignore_index=ignore_index,
        direction=offsets_to_direction(one.offsets[0]),
        moving=one.moving[0],
    )
    atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))


def offsets_to_direction(offsets: np.ndarray) -> np.ndarray:
    from ..ops.directions import DIRECTION_VECTORS

    dy, dx = np.sign(offsets[0]), np.sign(offsets[1])
    direction = np.full(dy.shape, -1, np.int64)
    for k, (vy, vx) in enumerate(DIRECTION_VECTORS[8]):
        direction[(dy == vy) & (dx == vx) & ((dy != 0) | (dx != 0))] = k
    return direction
