"""What segfix knows about each dataset, in one place: classes and their names, the ignore label as the files
store it, the label file format, the palette of the pictures, and the reader of :mod:`segfix.data.datasets`.

The command line's ``--dataset`` flags, the readers and the pictures all read these facts from here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .datasets import (
    ADE20K,
    CAMVID_CLASSES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_TO_TRAIN,
    CamVid,
    Cityscapes,
    FolderPairs,
    LabelledImages,
)

__all__ = [
    "DATASETS",
    "LABEL_FORMATS",
    "DatasetInfo",
    "dataset_from_spec",
    "dataset_info",
    "decode_labels",
    "encode_labels",
]


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about one dataset's label files.

    Attributes:
        name: the key in :data:`DATASETS` (what ``--dataset`` takes).
        num_classes: evaluated classes ``0 .. num_classes - 1`` after decoding.
        stored_ignore: the label value the files use for "not scored" (CamVid's void is 11).
        label_format: how ids are stored (see :data:`segfix.data.registry.LABEL_FORMATS`).
        class_names: one name per class, or None (numbered).
        palette: a name in :data:`segfix.viz.PALETTES`, or None (a generated palette).
        reader: the :mod:`segfix.data.datasets` class that reads the dataset's own layout, or None.
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


# How datasets store class ids in their label files, and the one rule that turns stored values into classes.

LABEL_FORMATS = ("trainid", "cityscapes-labelid", "ade20k")
"""``trainid``: class ids as stored, 255 = ignore. ``cityscapes-labelid``: Cityscapes labelIds (mapped to the
19 trainIds and back). ``ade20k``: 0 = ignore ("other"), 1..150 = classes."""

_LABEL_TO_TRAIN = np.full(256, 255, np.int64)
for _label, _train in CITYSCAPES_LABEL_TO_TRAIN.items():
    _LABEL_TO_TRAIN[_label] = _train
_TRAIN_TO_LABEL = np.zeros(256, np.int64)
for _label, _train in CITYSCAPES_LABEL_TO_TRAIN.items():
    _TRAIN_TO_LABEL[_train] = _label


def encode_labels(stored: np.ndarray, label_format: str, stored_ignore: int | None = None) -> np.ndarray:
    """Stored ids -> class ids ``0..C-1`` with 255 = ignore (int64).

    ``stored_ignore``: a stored value that means ignore besides the format's own (e.g. ``--ignore-index 0`` on
    a trainid map); it is compared with the stored values, before they become class ids, so that it can never
    freeze a class that happens to have the same number."""
    if label_format == "trainid":
        classes = stored.astype(np.int64)
    elif label_format == "cityscapes-labelid":
        if stored.max(initial=0) > 255 or stored.min(initial=0) < 0:
            raise ValueError(f"expected Cityscapes labelIds (0..33), found {int(stored.max())}")
        classes = _LABEL_TO_TRAIN[stored]
    elif label_format == "ade20k":
        classes = stored.astype(np.int64) - 1
        classes[stored == 0] = 255
    else:
        raise ValueError(f"label format: expected one of {LABEL_FORMATS}, got {label_format!r}")
    if stored_ignore is not None:
        classes[stored == stored_ignore] = 255
    return classes


def decode_labels(classes: np.ndarray, stored: np.ndarray, label_format: str) -> np.ndarray:
    """Class ids -> the stored encoding, dtype of ``stored``. Ignore pixels (255) get back their original stored
    value (refinement never moves or creates ignore, so this is lossless)."""
    if label_format == "trainid":
        out = classes
    elif label_format == "cityscapes-labelid":
        out = _TRAIN_TO_LABEL[np.clip(classes, 0, 255)]
    elif label_format == "ade20k":
        out = classes + 1
    else:
        raise ValueError(f"label format: expected one of {LABEL_FORMATS}, got {label_format!r}")
    return np.where(classes == 255, stored, out).astype(stored.dtype)


def dataset_from_spec(spec: str, split: str | None = None) -> LabelledImages:
    """A command line's ``KIND=ROOT`` -> a reader: camvid, cityscapes, ade20k (``split``: default the dataset's),
    or ``folder=IMAGE_GLOB,LABEL_GLOB,NUM_CLASSES``.

    Raises:
        ValueError: a spec in another form or of an unknown kind, naming the forms expected.
    """
    if "=" not in spec:
        raise ValueError(f"--dataset: expected KIND=ROOT (camvid, cityscapes, ade20k, folder), got {spec!r}")
    kind, root = spec.split("=", 1)
    info = DATASETS.get(kind)
    if info is not None and info.reader is not None:
        if kind == "ade20k" and split == "val":
            split = "validation"  # ADE20K's own name for it
        return info.reader(root, split or info.default_split)
    if kind == "folder":
        try:
            images, labels, classes = root.split(",")
            return FolderPairs(images, labels, int(classes))
        except ValueError:
            raise ValueError(f"--dataset folder=IMAGE_GLOB,LABEL_GLOB,NUM_CLASSES, got {spec!r}") from None
    raise ValueError(f"--dataset: unknown kind {kind!r}; expected camvid, cityscapes, ade20k or folder")
