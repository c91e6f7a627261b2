"""The bundled example: a CC0 photo, a coarse label map standing in for a network's output, and a reference.

>>> import segfix
>>> ex = segfix.load_example()
>>> ex.image.shape, ex.coarse.shape, ex.num_classes
((400, 600, 3), (400, 600), 5)
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .files import read_image, read_label

__all__ = ["Example", "load_example"]


@dataclass(frozen=True, repr=False)
class Example:
    """Arrays of the bundled example.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB, scikit-image's ``coffee`` photo (CC0, Rachel Michetti).
        coarse: ``(H, W)`` uint8 class ids: the reference seen through a stride-16 model (blocky edges), the
            kind of map a segmentation network predicts.
        reference: ``(H, W)`` uint8 class ids: a colour clustering of the photo (not a human annotation).
        num_classes: classes are ``0 .. num_classes - 1``.
    """

    image: np.ndarray
    coarse: np.ndarray
    reference: np.ndarray
    num_classes: int

    def __repr__(self) -> str:
        h, w = self.coarse.shape
        return f"Example(image {w}x{h} RGB, coarse and reference label maps, {self.num_classes} classes)"


def load_example() -> Example:
    """The bundled example (no download): ``image``, ``coarse`` and ``reference``, see :class:`Example`."""
    assets = Path(str(resources.files("segfix") / "assets"))
    reference = read_label(assets / "coffee_reference.png")
    return Example(
        image=read_image(assets / "coffee.jpg"),
        coarse=read_label(assets / "coffee_coarse.png"),
        reference=reference,
        num_classes=int(reference.max()) + 1,
    )
