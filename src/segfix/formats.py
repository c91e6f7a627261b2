"""File formats around SegFix: label-id encodings, offset files (``.npz`` and the original's ``.mat``),
Cityscapes instance results (``*_pred.txt`` + mask PNGs) and COCO RLE.

Every reader raises ``ValueError`` naming the file and what was wrong; every writer is atomic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_write, read_label, write_png
from .data import CITYSCAPES_LABEL_TO_TRAIN
from .field import RefinementField, field_from_offsets

__all__ = [
    "LABEL_FORMATS",
    "InstancePrediction",
    "OffsetSettings",
    "decode_labels",
    "encode_labels",
    "read_cityscapes_instances",
    "read_field",
    "read_offset_file",
    "read_offset_settings",
    "read_offsets",
    "rle_decode",
    "rle_encode",
    "write_cityscapes_instances",
    "write_field",
    "write_offsets",
]

LABEL_FORMATS = ("trainid", "cityscapes-labelid", "ade20k")
"""``trainid``: class ids as stored, 255 = ignore. ``cityscapes-labelid``: Cityscapes labelIds (mapped to the
19 trainIds and back). ``ade20k``: 0 = ignore ("other"), 1..150 = classes."""

_LABEL_TO_TRAIN = np.full(256, 255, np.int64)
for _label, _train in CITYSCAPES_LABEL_TO_TRAIN.items():
    _LABEL_TO_TRAIN[_label] = _train
_TRAIN_TO_LABEL = np.zeros(256, np.int64)
for _label, _train in CITYSCAPES_LABEL_TO_TRAIN.items():
    _TRAIN_TO_LABEL[_train] = _label


def encode_labels(stored: np.ndarray, label_format: str) -> np.ndarray:
    """Stored ids -> class ids ``0..C-1`` with 255 = ignore (int64)."""
    if label_format == "trainid":
        return stored.astype(np.int64)
    if label_format == "cityscapes-labelid":
        if stored.max(initial=0) > 255:
            raise ValueError(f"expected Cityscapes labelIds (0..33), found {int(stored.max())}")
        return _LABEL_TO_TRAIN[stored]
    if label_format == "ade20k":
        ids = stored.astype(np.int64) - 1
        ids[stored == 0] = 255
        return ids
    raise ValueError(f"label format: expected one of {LABEL_FORMATS}, got {label_format!r}")


def decode_labels(classes: np.ndarray, stored: np.ndarray, label_format: str) -> np.ndarray:
    """Class ids -> the stored encoding, dtype of ``stored``. Ignore pixels get back their original stored
    value (refinement never moves or creates ignore, so this is lossless)."""
    if label_format == "trainid":
        out = classes
    elif label_format == "cityscapes-labelid":
        out = np.where(classes == 255, stored, _TRAIN_TO_LABEL[np.clip(classes, 0, 255)])
    elif label_format == "ade20k":
        out = np.where(classes == 255, stored, classes + 1)
    else:
        raise ValueError(f"label format: expected one of {LABEL_FORMATS}, got {label_format!r}")
    return out.astype(stored.dtype)


@dataclass(frozen=True)
class OffsetSettings:
    """How stored offsets are meant to be applied: ``out[p] = labels[p + scale * offset]``, ``iterations``
    times, by the ``rule`` (``'argmax'``, or ``'vote'`` with the stored direction probabilities and
    ``min_share``), leaving the label map's thin parts of radius ``thin_guard`` (of the classes
    ``thin_guard_classes``, None: of all) as they are. The original's ``.mat`` files carry none (None: the
    reader's default)."""

    scale: int | None = None
    iterations: int | None = None
    rule: str = "argmax"
    min_share: float | None = None
    thin_guard: int | None = None
    thin_guard_classes: tuple[int, ...] | None = None


def write_offsets(
    path: Path, offsets: np.ndarray, settings: OffsetSettings | None = None, *, vote_prob: np.ndarray | None = None
) -> None:
    """Write ``(2, H, W)`` offsets: ``.npz`` (key ``offsets``, int8, compressed, plus ``scale``,
    ``iterations``, ``rule`` and ``min_share`` when ``settings`` are given, and for the vote rule ``vote_prob``,
    float32 ``(K, D)``: the direction probabilities of the K pixels with a non-zero offset, in row-major order)
    or ``.mat`` (the original's layout: key ``mat``, ``H x W x 2`` int64 ``(dy, dx)``; no settings)."""
    path = Path(path)
    if path.suffix == ".npz":
        extra = {}
        if settings is not None:
            extra = {k: np.asarray(v) for k, v in vars(settings).items() if v is not None}
        if vote_prob is not None:
            extra["vote_prob"] = np.asarray(vote_prob, np.float32)
        arrays: dict[str, Any] = {"offsets": offsets.astype(np.int8), **extra}
        atomic_write(path, lambda tmp: np.savez_compressed(tmp, **arrays))
    elif path.suffix == ".mat":
        from scipy.io import savemat

        mat = np.ascontiguousarray(np.moveaxis(offsets, 0, -1).astype(np.int64))
        atomic_write(path, lambda tmp: savemat(tmp, {"mat": mat}, do_compression=True))
    else:
        raise ValueError(f"{path}: offsets files end in .npz or .mat")


def read_offset_settings(path: Path) -> OffsetSettings:
    """The :class:`OffsetSettings` stored in an ``.npz`` offsets file (all None for ``.mat`` and older files)."""
    return read_offset_file(path)[1]


def _settings_of(data) -> OffsetSettings:
    return OffsetSettings(
        scale=int(data["scale"]) if "scale" in data else None,
        iterations=int(data["iterations"]) if "iterations" in data else None,
        rule=str(data["rule"]) if "rule" in data else "argmax",
        min_share=float(data["min_share"]) if "min_share" in data else None,
        thin_guard=int(data["thin_guard"]) if "thin_guard" in data else None,
        thin_guard_classes=tuple(int(c) for c in data["thin_guard_classes"]) if "thin_guard_classes" in data else None,
    )


def read_offsets(path: Path) -> np.ndarray:
    """Read offsets written by :func:`write_offsets` or released by the original; returns int8 ``(2, H, W)``."""
    return read_offset_file(path)[0]


def read_offset_file(path: Path) -> tuple[np.ndarray, OffsetSettings]:
    """Offsets (int8 ``(2, H, W)``) and the settings the file records, from one read of the file."""
    offsets, settings, _ = _read_offsets(Path(path), with_votes=False)
    return offsets, settings


def read_field(path: Path, *, default_scale: int) -> RefinementField:
    """An offsets file as a :class:`segfix.field.RefinementField` of one image: the scale, iterations and rule
    it records (``default_scale``, one step and the argmax rule where it records none, as the original's)."""
    offsets, settings, vote_prob = _read_offsets(Path(path), with_votes=True)
    if settings.rule not in ("argmax", "vote") or (settings.rule == "vote" and vote_prob is None):
        raise ValueError(f"{path}: rule {settings.rule!r} needs what the file does not hold (vote_prob)")
    return field_from_offsets(
        offsets,
        scale=settings.scale if settings.scale is not None else default_scale,
        iterations=settings.iterations or 1,
        rule=settings.rule,
        min_share=settings.min_share or 0.0,
        vote_prob=vote_prob,
        thin_guard=settings.thin_guard or 0,
        thin_guard_classes=settings.thin_guard_classes,
    )


def write_field(path: Path, field: RefinementField) -> None:
    """Write the field of one image so that :func:`read_field` gives it back: its offsets, scale, iterations
    and rule, and for the vote its direction probabilities at the moving pixels. ``.mat`` files hold the
    argmax offsets alone (the original's format)."""
    if len(field) != 1:
        raise ValueError(f"write_field: expected the field of one image, got {len(field)}")
    one = field.numpy()
    min_share = one.min_share if one.rule == "vote" else None
    classes = one.thin_guard_classes if one.thin_guard else None
    settings = OffsetSettings(one.scale, one.iterations, one.rule, min_share, one.thin_guard or None, classes)
    # The file marks the moving pixels by their nonzero offsets; the vote's rows follow them in the same order.
    vote_prob = one.direction_prob if one.rule == "vote" else None
    write_offsets(path, one.offsets[0], settings, vote_prob=vote_prob)


def _read_offsets(path: Path, *, with_votes: bool) -> tuple[np.ndarray, OffsetSettings, np.ndarray | None]:
    settings, vote_prob = OffsetSettings(), None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "offsets" not in data:
                raise ValueError(f"{path}: expected key 'offsets', found {sorted(data.files)}")
            offsets = data["offsets"]
            settings = _settings_of(data)
            if with_votes and "vote_prob" in data:
                vote_prob = data["vote_prob"]
        if offsets.ndim != 3 or offsets.shape[0] != 2:
            raise ValueError(f"{path}: expected offsets of shape (2, H, W), got {offsets.shape}")
    elif path.suffix == ".mat":
        from scipy.io import loadmat

        data = loadmat(path)
        if "mat" not in data:
            raise ValueError(
                f"{path}: expected the original's key 'mat', found {sorted(k for k in data if k[0] != '_')}"
            )
        mat = data["mat"]
        if mat.ndim != 3 or mat.shape[2] != 2:
            raise ValueError(f"{path}: expected 'mat' of shape (H, W, 2) (dy, dx), got {mat.shape}")
        offsets = np.moveaxis(mat, -1, 0)
    else:
        raise ValueError(f"{path}: offsets files end in .npz or .mat")
    if offsets.dtype.kind not in "iu":
        raise ValueError(f"{path}: expected integer offsets, got {offsets.dtype}")
    if np.abs(offsets).max(initial=0) > 127:
        raise ValueError(f"{path}: offsets beyond +-127 px are not SegFix offsets")
    return np.ascontiguousarray(offsets.astype(np.int8)), settings, vote_prob


@dataclass
class InstancePrediction:
    """Instances of one image: masks ``(K, H, W)`` bool, class ids ``(K,)``, scores ``(K,)``, and per-instance
    names (mask file names or COCO record indices) used when writing back."""

    masks: np.ndarray
    classes: list[int]
    scores: list[float]
    names: list[str]


def read_cityscapes_instances(txt: Path) -> InstancePrediction:
    """Read a Cityscapes ``*_pred.txt`` (lines ``mask.png classId score``, masks relative to the txt)."""
    txt = Path(txt)
    masks: list[np.ndarray] = []
    classes: list[int] = []
    scores: list[float] = []
    names: list[str] = []
    for number, line in enumerate(txt.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"{txt}:{number}: expected 'mask.png classId score', got {line!r}")
        name, class_id, score = parts
        mask = read_label(txt.parent / name) > 0
        if masks and mask.shape != masks[0].shape:
            raise ValueError(f"{txt.parent / name}: mask size {mask.shape} differs from {masks[0].shape}")
        masks.append(mask)
        classes.append(int(class_id))
        scores.append(float(score))
        names.append(name)
    stack = np.stack(masks) if masks else np.zeros((0, 1, 1), bool)
    return InstancePrediction(stack, classes, scores, names)


def write_cityscapes_instances(txt: Path, prediction: InstancePrediction) -> None:
    """Write masks (0/255 PNG, same relative names) first, then the txt, so that the txt marks completion."""
    txt = Path(txt)
    for mask, name in zip(prediction.masks, prediction.names):
        write_png(txt.parent / name, mask.astype(np.uint8) * 255)
    lines = "".join(f"{n} {c} {s}\n" for n, c, s in zip(prediction.names, prediction.classes, prediction.scores))
    atomic_write(txt, lambda tmp: tmp.write_text(lines))


def rle_decode(rle: dict) -> np.ndarray:
    """COCO RLE (``{"size": [h, w], "counts": str | bytes | list}``) -> bool mask ``(h, w)``; pycocotools
    gives ``bytes`` counts in memory and ``str`` in JSON."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = _rle_counts_from_string(counts)
    flat = np.zeros(h * w, dtype=bool)
    position, value = 0, False
    for run in counts:
        if value:
            flat[position : position + run] = True
        position += run
        value = not value
    if position != h * w:
        raise ValueError(f"RLE counts cover {position} pixels, expected {h * w}")
    return flat.reshape((w, h)).T  # COCO runs go down columns


def rle_encode(mask: np.ndarray) -> dict:
    """bool mask ``(h, w)`` -> COCO compressed RLE ``{"size": [h, w], "counts": str}``."""
    flat = np.asarray(mask, bool).T.ravel()
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": _rle_counts_to_string(runs)}


def _rle_counts_to_string(counts: Iterable[int]) -> str:
    counts = list(counts)
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def _rle_counts_from_string(s: str) -> list[int]:
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts
