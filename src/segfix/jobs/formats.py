"""File formats around SegFix: label-id encodings, offset files (``.npz`` and the original's ``.mat``),
Cityscapes instance results (``*_pred.txt`` + mask PNGs) and COCO RLE.

Every reader raises ``ValueError`` naming the file and what was wrong; every writer is atomic.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import THIN_CLASSES_FROM_LABELS
from ..data.files import atomic_write, image_size, read_label, write_png
from ..hub.config import translate_legacy_names
from ..limits import MAX_FILE_PIXELS, is_int
from ..ops.field import RefinementField, field_from_offsets

__all__ = [
    "InstancePrediction",
    "OffsetSettings",
    "instance_mask_names",
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


@dataclass(frozen=True)
class OffsetSettings:
    """How stored offsets are meant to be applied, by the names a :class:`~segfix.ops.field.RefinementField` and
    ``config.json`` give them: ``out[p] = labels[p + scale * offset]``, ``iterations`` times, following the offset
    or, with ``direction_vote``, by the vote of the stored direction probabilities (``min_vote_share``), leaving
    the label map's thin parts of radius ``thin_guard`` (of the classes ``thin_guard_classes``, None: of all) and
    its pixels farther than ``max_edge_distance`` from another label as they are. The original's ``.mat`` files
    carry none (None: the reader's default). Files that earlier versions wrote (``rule``, ``min_share``) read
    through :func:`segfix.hub.config.translate_legacy_names`."""

    scale: int | None = None
    iterations: int | None = None
    direction_vote: bool = False
    min_vote_share: float | None = None
    thin_guard: int | None = None
    thin_guard_classes: tuple[int, ...] | str | None = None
    max_edge_distance: int | None = None


def write_offsets(
    path: Path, offsets: np.ndarray, settings: OffsetSettings | None = None, *, vote_prob: np.ndarray | None = None
) -> None:
    """Write ``(2, H, W)`` offsets: ``.npz`` (key ``offsets``, int8, compressed, plus the :class:`OffsetSettings`
    by their names when ``settings`` are given, and for the vote ``vote_prob``,
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


def _settings_of(data, path: Path) -> OffsetSettings:
    def scalar(key: str, kind: str, convert):
        if key not in data:
            return None
        value = data[key]
        if value.ndim != 0 or value.dtype.kind not in kind:
            raise ValueError(f"{path}: expected {key!r} to hold one value, got {value.dtype} of shape {value.shape}")
        return convert(value)

    classes: tuple[int, ...] | str | None = None
    if "thin_guard_classes" in data:
        stored = data["thin_guard_classes"]
        if stored.ndim == 0 and stored.dtype.kind == "U" and str(stored) == THIN_CLASSES_FROM_LABELS:
            classes = THIN_CLASSES_FROM_LABELS
        elif stored.ndim != 1 or stored.dtype.kind not in "iu" or stored.size > 1024:
            raise ValueError(
                f"{path}: expected 'thin_guard_classes' to be 'auto' or a list of class ids, got {stored.dtype} "
                f"of shape {stored.shape}"
            )
        else:
            classes = tuple(int(c) for c in stored)
    stored = {
        "scale": scalar("scale", "iu", int),
        "iterations": scalar("iterations", "iu", int),
        "direction_vote": scalar("direction_vote", "b", bool),
        "rule": scalar("rule", "U", str),
        "min_vote_share": scalar("min_vote_share", "fiu", float),
        "min_share": scalar("min_share", "fiu", float),
        "thin_guard": scalar("thin_guard", "iu", int),
        "max_edge_distance": scalar("max_edge_distance", "iu", int),
    }
    try:
        named = translate_legacy_names({k: v for k, v in stored.items() if v is not None})
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return OffsetSettings(**{"direction_vote": False, **named, "thin_guard_classes": classes})


def read_offsets(path: Path) -> np.ndarray:
    """Read offsets written by :func:`write_offsets` or released by the original; returns int8 ``(2, H, W)``."""
    return read_offset_file(path)[0]


def read_offset_file(path: Path) -> tuple[np.ndarray, OffsetSettings]:
    """Offsets (int8 ``(2, H, W)``) and the settings the file records, from one read of the file."""
    offsets, settings, _ = _read_offsets(Path(path), with_votes=False)
    return offsets, settings


def read_field(path: Path, *, default_scale: int, size: tuple[int, int] | None = None) -> RefinementField:
    """An offsets file as a :class:`segfix.ops.field.RefinementField` of one image, by the settings it records
    (``default_scale``, one step and the argmax offset where it records none, as the original's).

    ``size``: the ``(H, W)`` of the prediction it belongs to; a file of another size is refused from its
    header, before its arrays are read."""
    offsets, settings, vote_prob = _read_offsets(Path(path), with_votes=True, size=size)
    if settings.direction_vote and vote_prob is None:
        raise ValueError(f"{path}: direction_vote needs what the file does not hold (vote_prob)")
    return field_from_offsets(
        offsets,
        scale=settings.scale if settings.scale is not None else default_scale,
        iterations=settings.iterations or 1,
        direction_vote=settings.direction_vote,
        min_vote_share=settings.min_vote_share or 0.0,
        vote_prob=vote_prob,
        thin_guard=settings.thin_guard or 0,
        thin_guard_classes=settings.thin_guard_classes,
        max_edge_distance=settings.max_edge_distance or 0,
    )


def write_field(path: Path, field: RefinementField) -> None:
    """Write the field of one image so that :func:`read_field` gives it back: its offsets and settings, and for
    the vote its direction probabilities at the moving pixels. ``.mat`` files hold the
    argmax offsets alone (the original's format)."""
    if len(field) != 1:
        raise ValueError(f"write_field: expected the field of one image, got {len(field)}")
    one = field.numpy()
    vote = bool(one.direction_vote)
    classes = one.thin_guard_classes if one.thin_guard else None
    min_vote_share = one.min_vote_share if vote else None
    settings = OffsetSettings(
        one.scale, one.iterations, vote, min_vote_share, one.thin_guard or None, classes, one.max_edge_distance or None
    )
    # The file marks the moving pixels by their nonzero offsets; the vote's rows follow them in the same order.
    vote_prob = one.direction_prob if vote else None
    write_offsets(path, one.offsets[0], settings, vote_prob=vote_prob)


def _read_offsets(
    path: Path, *, with_votes: bool, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, OffsetSettings, np.ndarray | None]:
    settings, vote_prob = OffsetSettings(), None
    if path.suffix == ".npz":
        shapes = _npz_shapes(path)
        if "offsets.npy" not in shapes:
            raise ValueError(f"{path}: expected key 'offsets', found {sorted(k[:-4] for k in shapes)}")
        _check_offsets_shape(path, shapes["offsets.npy"], size, "(2, H, W)")
        if with_votes and "vote_prob.npy" in shapes:
            rows = shapes["vote_prob.npy"]
            height, width = shapes["offsets.npy"][1:]
            if len(rows) != 2 or rows[0] > height * width or rows[1] not in (4, 8, 16):
                raise ValueError(f"{path}: expected 'vote_prob' of shape (K <= H*W, D in 4, 8, 16), got {rows}")
        with np.load(path, allow_pickle=False) as data:
            offsets = data["offsets"]
            settings = _settings_of(data, path)
            if with_votes and "vote_prob" in data:
                vote_prob = data["vote_prob"]
    elif path.suffix == ".mat":
        from scipy.io import loadmat, whosmat

        try:
            shapes = {name: shape for name, shape, _ in whosmat(path)}
        except Exception as error:  # noqa: BLE001 - scipy raises several types for a file that is no .mat
            raise ValueError(f"{path}: not a MATLAB .mat file ({error})") from None
        if "mat" not in shapes:
            raise ValueError(f"{path}: expected the original's key 'mat', found {sorted(shapes)}")
        shape = tuple(shapes["mat"])
        _check_offsets_shape(path, (shape[-1], *shape[:2]) if len(shape) == 3 else shape, size, "(H, W, 2)")
        mat = loadmat(path, variable_names=["mat"])["mat"]
        offsets = np.moveaxis(mat, -1, 0)
    else:
        raise ValueError(f"{path}: offsets files end in .npz or .mat")
    if offsets.dtype.kind not in "iu":
        raise ValueError(f"{path}: expected integer offsets, got {offsets.dtype}")
    if np.abs(offsets).max(initial=0) > 127:
        raise ValueError(f"{path}: offsets beyond +-127 px are not SegFix offsets")
    return np.ascontiguousarray(offsets.astype(np.int8)), settings, vote_prob


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0}


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The shape of every array in an ``.npz`` archive, from the headers alone (nothing is decompressed)."""
    try:
        with zipfile.ZipFile(path) as archive:
            shapes = {}
            for name in archive.namelist():
                with archive.open(name) as member:
                    version = np.lib.format.read_magic(member)
                    read = _NPY_HEADERS.get(version, np.lib.format.read_array_header_2_0)
                    shapes[name] = tuple(read(member)[0])
            return shapes
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path}: not an .npz archive of arrays ({error})") from None


def _check_offsets_shape(path: Path, shape: tuple[int, ...], size: tuple[int, int] | None, layout: str) -> None:
    """Refuse offsets of the wrong layout, of more than :data:`MAX_FILE_PIXELS` pixels, or of another size
    than the prediction's, from the header alone."""
    if len(shape) != 3 or shape[0] != 2:
        raise ValueError(f"{path}: expected offsets of shape {layout}, got {shape}")
    if shape[1] * shape[2] > MAX_FILE_PIXELS:
        raise ValueError(f"{path}: {shape[2]}x{shape[1]} offsets; expected at most {MAX_FILE_PIXELS} pixels")
    if size is not None and tuple(shape[1:]) != tuple(size):
        raise ValueError(
            f"{path}: offsets of size {shape[2]}x{shape[1]} (WxH) do not match the prediction's {size[1]}x{size[0]}"
        )


@dataclass
class InstancePrediction:
    """Instances of one image: masks ``(K, H, W)`` bool, class ids ``(K,)``, scores ``(K,)``, and per-instance
    names (mask file names or COCO record indices) used when writing back."""

    masks: np.ndarray
    classes: list[int]
    scores: list[float]
    names: list[str]


def read_cityscapes_instances(txt: Path, size: tuple[int, int] | None = None) -> InstancePrediction:
    """Read a Cityscapes ``*_pred.txt`` (lines ``mask.png classId score``, masks relative to the txt).

    Every mask's size is read from its header and must equal ``size`` (H, W), or the first mask's, before any
    mask is decoded."""
    txt = Path(txt)
    rows = []
    for number, line in enumerate(txt.read_text(errors="surrogateescape").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"{txt}:{number}: expected 'mask.png classId score', got {line!r}")
        name, class_id, score = parts
        try:
            rows.append((name, int(class_id), float(score)))
        except ValueError:
            raise ValueError(f"{txt}:{number}: expected an integer class id and a number score, got {line!r}") from None
    for name, _, _ in rows:
        mask_size = image_size(txt.parent / name)
        size = size or mask_size
        if mask_size != size:
            raise ValueError(f"{txt.parent / name}: mask size {mask_size} differs from {size}")
    masks = [read_label(txt.parent / name) > 0 for name, _, _ in rows]
    stack = np.stack(masks) if masks else np.zeros((0, *(size or (1, 1))), bool)
    return InstancePrediction(stack, [r[1] for r in rows], [r[2] for r in rows], [r[0] for r in rows])


def instance_mask_names(txt: Path, count: int) -> list[str]:
    """The names :func:`write_cityscapes_instances` gives the masks of ``txt``: ``<txt stem>_<k>.png`` beside
    it, derived from the txt's own name and never from the names a results file lists."""
    return [f"{Path(txt).stem}_{k}.png" for k in range(count)]


def write_cityscapes_instances(txt: Path, prediction: InstancePrediction) -> None:
    """Write masks (0/255 PNG) beside ``txt`` at :func:`instance_mask_names`, then the txt that lists them, so
    that the txt marks completion. The names the prediction was read with are not used: a results file that
    names ``/abs/path.png`` or ``../x.png`` must not make segfix write there."""
    txt = Path(txt)
    names = instance_mask_names(txt, len(prediction.masks))
    for mask, name in zip(prediction.masks, names):
        write_png(txt.parent / name, mask.astype(np.uint8) * 255)
    lines = "".join(f"{n} {c} {s}\n" for n, c, s in zip(names, prediction.classes, prediction.scores))
    atomic_write(txt, lambda tmp: tmp.write_text(lines))


def rle_decode(rle: dict, size: tuple[int, int] | None = None) -> np.ndarray:
    """COCO RLE (``{"size": [h, w], "counts": str | bytes | list}``) -> bool mask ``(h, w)``; pycocotools
    gives ``bytes`` counts in memory and ``str`` in JSON. ``size``: the ``(H, W)`` the mask must have; the
    record's size and counts are checked before the mask is allocated."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"expected a COCO RLE {{'size': [h, w], 'counts': ...}}, got {str(rle)[:80]!r}")
    shape = rle["size"]
    if not isinstance(shape, (list, tuple)) or len(shape) != 2 or any(not is_int(v) or v < 0 for v in shape):
        raise ValueError(f"RLE size: expected [height, width] of non-negative integers, got {shape!r}")
    h, w = shape
    if size is not None and (h, w) != tuple(size):
        raise ValueError(f"RLE size {h}x{w} (HxW) does not match the image's {size[0]}x{size[1]}")
    if h * w > MAX_FILE_PIXELS:
        raise ValueError(f"RLE size {h}x{w}: expected at most {MAX_FILE_PIXELS} pixels")
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if isinstance(counts, str):
        counts = _rle_counts_from_string(counts)
    if not isinstance(counts, list) or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
        raise ValueError("RLE counts: expected non-negative run lengths")
    if sum(counts) != h * w:
        raise ValueError(f"RLE counts cover {sum(counts)} pixels, expected {h * w}")
    flat = np.zeros(h * w, dtype=bool)
    position, value = 0, False
    for run in counts:
        if value:
            flat[position : position + run] = True
        position += run
        value = not value
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
            if p >= len(s):
                raise ValueError("RLE counts: the compressed string ends inside a number")
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
