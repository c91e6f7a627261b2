"""What segfix knows about each dataset, in one place: classes and their names, the ignore label as the files
store it, the label file format, the palette of the pictures, and the reader of :mod:`segfix.data`.

The command line's ``--dataset`` flags, the readers and the pictures all read these facts from here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from .data import ADE20K, CAMVID_CLASSES, CITYSCAPES_CLASSES, CamVid, Cityscapes, LabelledImages

__all__ = ["DATASETS", "DatasetInfo", "dataset_info"]


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about one dataset's label files.

    Attributes:
        name: the key in :data:`DATASETS` (what ``--dataset`` takes).
        num_classes: evaluated classes ``0 .. num_classes - 1`` after decoding.
        stored_ignore: the label value the files use for "not scored" (CamVid's void is 11).
        label_format: how ids are stored (see :data:`segfix.formats.LABEL_FORMATS`).
        class_names: one name per class, or None (numbered).
        palette: a name in :data:`segfix.viz.PALETTES`, or None (a generated palette).
        reader: the :mod:`segfix.data` class that reads the dataset's own layout, or None.
        default_split: the training split's name in that layout.
    """

    name: str
    num_classes: int
    stored_ignore: int
    label_format: str
    class_names: tuple[str, ...] | None = None
    palette: str | None = None
    reader: Callable[..., LabelledImages] | None = None
    default_split: str = "train"

    def names(self) -> list[str]:
        """Class names, numbered when the dataset has none."""
        return list(self.class_names) if self.class_names else [str(i) for i in range(self.num_classes)]


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("camvid", 11, 11, "trainid", tuple(CAMVID_CLASSES), "camvid", CamVid),
        DatasetInfo("cityscapes", 19, 255, "trainid", tuple(CITYSCAPES_CLASSES), "cityscapes", Cityscapes),
        DatasetInfo("cityscapes-labelid", 19, 255, "cityscapes-labelid", tuple(CITYSCAPES_CLASSES), "cityscapes"),
        DatasetInfo("ade20k", 150, 255, "ade20k", None, None, ADE20K, "training"),
    )
}
"""The datasets segfix knows by name."""


def dataset_info(name: str) -> DatasetInfo:
    """The facts for ``name``; an unknown name is a ``ValueError`` that suggests the closest known one."""
    if name in DATASETS:
        return DATASETS[name]
    close = difflib.get_close_matches(name, list(DATASETS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}{hint}")
