"""Dataset readers: a dataset root in its standard layout -> image, label map (and instance ids) per sample.

Readers only read files; augmentation and targets live in :mod:`segfix.data.augment` and :mod:`segfix.ops.targets`.
Each reader is a sequence of :class:`Sample` with ``len()`` and indexing, and knows its ``num_classes``,
``ignore_index`` and ``class_names``.

* :class:`CamVid`: the SegNet layout (``train/``, ``trainannot/``, ``val/``, ``valannot/``, ...), 11 classes,
  id 11 = void (mapped to the ignore index).
* :class:`Cityscapes`: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``gtFine/<split>/<city>/
  *_gtFine_labelIds.png`` (mapped to the 19 trainIds, others -> ignore) and ``*_gtFine_instanceIds.png``.
* :class:`ADE20K`: ``ADEChallengeData2016/images/{training,validation}/*.jpg`` with ``annotations/...png``;
  label 0 is "other" (ignore), 1..150 become 0..149.
* :class:`FolderPairs`: any image glob with a label glob, matched by file stem, with an optional id mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import match_stem, read_image, read_label

__all__ = [
    "ADE20K",
    "CITYSCAPES_CLASSES",
    "CAMVID_CLASSES",
    "CamVid",
    "Cityscapes",
    "FolderPairs",
    "LabelledImages",
    "Sample",
    "cityscapes_instance_segments",
    "parse_holdout",
]

CAMVID_CLASSES = [
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
]
CITYSCAPES_CLASSES = [
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
]
# Cityscapes labelId -> trainId for the 19 evaluated classes; every other id is ignored.
CITYSCAPES_LABEL_TO_TRAIN = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}


@dataclass
class Sample:
    """One training or evaluation sample: ``image`` (H, W, 3) uint8 RGB, ``label`` (H, W) int64 class ids with
    ``ignore_index``, optional ``instance_ids`` (H, W) int64, and a ``name`` (file stem)."""

    image: np.ndarray
    label: np.ndarray
    name: str
    instance_ids: np.ndarray | None = None


def _lookup_table(mapping: Mapping[int, int], ignore_index: int, size: int = 65536) -> np.ndarray:
    table = np.full(size, ignore_index, dtype=np.int64)
    for source, target in mapping.items():
        table[source] = target
    return table


class LabelledImages(Sequence):
    """Pairs of image and label files, with an optional id mapping. The base of every reader."""

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        *,
        num_classes: int,
        ignore_index: int = 255,
        id_map: Mapping[int, int] | None = None,
        class_names: Sequence[str] | None = None,
        instance_files: Sequence[Path] | None = None,
    ) -> None:
        if not pairs:
            raise FileNotFoundError(f"{type(self).__name__}: no image/label pairs found")
        self.pairs = list(pairs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self._table = _lookup_table(id_map, ignore_index) if id_map is not None else None
        self.instance_files = list(instance_files) if instance_files is not None else None

    def __len__(self) -> int:
        return len(self.pairs)

    def split(self, every: int | str) -> tuple[LabelledImages, LabelledImages]:
        """(kept, held_out), e.g. to pick settings off the test set.

        ``every``: an integer N >= 2 holds out every N-th sample; a string holds out the samples whose image file
        name starts with it, e.g. ``"0001TP"`` for one CamVid drive, so that the held-out scenes share no
        sequence with the training ones."""
        if isinstance(every, str):
            held = {i for i, (image, _) in enumerate(self.pairs) if image.name.startswith(every)}
            if not held or len(held) == len(self):
                raise ValueError(
                    f"holdout prefix {every!r}: expected it to match some but not all of the {len(self)} image "
                    f"names, got {len(held)} matches (names look like {self.pairs[0][0].name!r})"
                )
        elif isinstance(every, bool) or not isinstance(every, int) or every < 2:
            raise ValueError(f"every: expected an integer >= 2 or a file-name prefix, got {every!r}")
        else:
            held = set(range(every - 1, len(self), every))
        parts = []
        for keep in (False, True):
            indices = [i for i in range(len(self)) if (i in held) == keep]
            part = object.__new__(type(self))
            part.__dict__.update(self.__dict__)
            part.pairs = [self.pairs[i] for i in indices]
            if self.instance_files is not None:
                part.instance_files = [self.instance_files[i] for i in indices]
            parts.append(part)
        return parts[0], parts[1]

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        image_path, label_path = self.pairs[index]
        image = read_image(image_path)
        label = read_label(label_path).astype(np.int64)
        if self._table is not None:
            label = self._table[label]
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"{label_path}: label size {label.shape} does not match image {image_path} {image.shape[:2]}"
            )
        instance_ids = None
        if self.instance_files is not None:
            instance_ids = read_label(self.instance_files[index]).astype(np.int64)
        return Sample(image=image, label=label, name=image_path.stem, instance_ids=instance_ids)


def parse_holdout(text: str) -> int | str:
    """What :meth:`LabelledImages.split` takes, from a command-line word: ``"10"`` -> 10 (every 10th image; ``"0"``
    -> 0, none held out), anything else a file-name prefix (``"0001TP"``: one CamVid drive).

    Raises:
        ValueError: a negative count, 1, an empty word, or a prefix with a path separator or a wildcard.
    """
    try:
        every = int(text)
    except ValueError:
        if not text.strip() or any(c in text for c in "/\\*?"):
            raise ValueError(f"holdout: expected an integer N or a file-name prefix, got {text!r}") from None
        return text
    if every == 1 or every < 0:
        raise ValueError(f"holdout: expected 0 (none), N >= 2 or a file-name prefix, got {text!r}")
    return every


def _pair_by_stem(images: list[Path], labels: list[Path]) -> list[tuple[Path, Path]]:
    """(image, label) pairs whose file names share a key (:func:`segfix.data.files.match_stem`, the folder
    jobs' rule)."""
    by_stem = {match_stem(p.name): p for p in labels}
    return [(image, by_stem[match_stem(image.name)]) for image in images if match_stem(image.name) in by_stem]


class CamVid(LabelledImages):
    """CamVid in the SegNet layout: ``<root>/<split>/*.png`` and ``<root>/<split>annot/*.png``."""

    VOID = 11

    def __init__(self, root: str | Path, split: str = "train", *, ignore_index: int = 255) -> None:
        root = Path(root)
        images = sorted((root / split).glob("*.png"))
        labels = sorted((root / f"{split}annot").glob("*.png"))
        if not images:
            raise FileNotFoundError(f"CamVid: no images in {root / split} (expected the SegNet layout)")
        mapping = {i: i for i in range(11)}
        super().__init__(
            _pair_by_stem(images, labels),
            num_classes=11,
            ignore_index=ignore_index,
            id_map=mapping,
            class_names=CAMVID_CLASSES,
        )


class Cityscapes(LabelledImages):
    """Cityscapes fine annotations, trainIds (19 classes); ``instances=True`` also reads instance ids."""

    def __init__(
        self, root: str | Path, split: str = "train", *, ignore_index: int = 255, instances: bool = False
    ) -> None:
        root = Path(root)
        images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        if not images:
            raise FileNotFoundError(f"Cityscapes: no images in {root / 'leftImg8bit' / split}")
        labels = sorted((root / "gtFine" / split).glob("*/*_gtFine_labelIds.png"))
        pairs = _pair_by_stem(images, labels)
        instance_files = None
        if instances:
            instance_files = [lbl.with_name(lbl.name.replace("_labelIds", "_instanceIds")) for _, lbl in pairs]
        super().__init__(
            pairs,
            num_classes=19,
            ignore_index=ignore_index,
            id_map=CITYSCAPES_LABEL_TO_TRAIN,
            class_names=CITYSCAPES_CLASSES,
            instance_files=instance_files,
        )


def cityscapes_instance_segments(instance_ids: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """The original's instance segments: ids >= 1000 (things) and evaluated labelIds (stuff) are kept, every
    other id becomes ``ignore_index``. Feed the result to :func:`segfix.instance_targets`."""
    out = instance_ids.astype(np.int64).copy()
    stuff = instance_ids < 1000
    evaluated = np.isin(instance_ids, list(CITYSCAPES_LABEL_TO_TRAIN))
    out[stuff & ~evaluated] = ignore_index
    return out


class ADE20K(LabelledImages):
    """ADE20K SceneParsing: 150 classes; annotation 0 ("other") is ignored, 1..150 become 0..149."""

    def __init__(self, root: str | Path, split: str = "training", *, ignore_index: int = 255) -> None:
        root = Path(root)
        base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
        images = sorted((base / "images" / split).glob("*.jpg"))
        labels = sorted((base / "annotations" / split).glob("*.png"))
        if not images:
            raise FileNotFoundError(f"ADE20K: no images in {base / 'images' / split}")
        mapping = {i: i - 1 for i in range(1, 151)}
        super().__init__(_pair_by_stem(images, labels), num_classes=150, ignore_index=ignore_index, id_map=mapping)


class FolderPairs(LabelledImages):
    """Any images with label maps, matched by file stem: ``FolderPairs("imgs/*.jpg", "labels/*.png", 21)``."""

    def __init__(
        self,
        image_glob: str,
        label_glob: str,
        num_classes: int,
        *,
        ignore_index: int = 255,
        id_map: Mapping[int, int] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        images = sorted(_glob(image_glob))
        labels = sorted(_glob(label_glob))
        if not images:
            raise FileNotFoundError(f"FolderPairs: no file matches {image_glob!r}")
        super().__init__(
            _pair_by_stem(images, labels),
            num_classes=num_classes,
            ignore_index=ignore_index,
            id_map=id_map,
            class_names=class_names,
        )


def _glob(pattern: str) -> list[Path]:
    import glob

    return [Path(p) for p in glob.glob(pattern, recursive=True)]
