"""File helpers for the command line: atomic writes, walking input trees, and image/label reading with clear
errors.

Sizes are read from file headers before any pixel is decoded, so that a small file cannot ask for gigabytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..limits import MAX_FILE_PIXELS

__all__ = [
    "LabelStyle",
    "atomic_write",
    "read_image",
    "read_label",
    "read_label_with_style",
    "write_label",
    "write_png",
]

TEMP_PREFIX = ".segfix-tmp-"
"""Name prefix of the temporary files :func:`atomic_write` creates: only files so named are ever cleaned up."""


HOST = socket.gethostname().replace(".", "_").replace("@", "_") or "host"


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    A reader (or a re-run after a kill) sees either the old file or the complete new one, never a half-written
    file. ``tmp`` keeps ``path``'s suffix so that format-sniffing writers (Pillow, numpy) behave, and its name
    records this process (``.segfix-tmp-<pid>@<host>.<stem>.<random>.partial<suffix>``) so that a later run
    removes only what a dead process left (:func:`remove_own_stale_temp_files`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{TEMP_PREFIX}{os.getpid()}@{HOST}.{path.stem[:64]}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the user's usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def differences_from_record(path: Path, record: dict[str, Any], *, write: bool = True) -> list[str]:
    """The keys whose values differ between ``record`` and the JSON record already at ``path`` (sorted); with no
    record there, none, and ``record`` is written (atomically) when ``write``. What a resumable job or run keeps
    beside its outputs, so that they count as done only for what made them.

    Raises:
        ValueError: the file at ``path`` is not a JSON object.
    """
    path = Path(path)
    record = json.loads(json.dumps(record, default=str))  # as it reads back
    if path.is_file() and not path.is_symlink():
        try:
            recorded = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not valid JSON: {error}") from None
        if not isinstance(recorded, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(recorded).__name__}")
        return sorted(k for k in set(recorded) | set(record) if recorded.get(k) != record.get(k))
    if write:
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1, sort_keys=True)))
    return []


def describe_change(key: str, there: Any, now: Any, limit: int = 4) -> str:
    """How a recorded value differs from today's, for :func:`differences_from_record`'s callers:
    ``"iterations 1 there, 2 now"``; a nested record names its differing leaves (``"config.decision.iterations 1
    there, 3 now"``, at most ``limit`` per level), and a digest (a key ending in ``sha256``) only that it differs."""
    if isinstance(there, dict) and isinstance(now, dict):
        keys = [k for k in sorted(set(there) | set(now)) if there.get(k) != now.get(k)]
        leaves = [describe_change(f"{key}.{k}", there.get(k), now.get(k)) for k in keys[:limit]]
        return "; ".join(leaves) + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")
    if key.endswith("sha256"):
        return f"{key} differs"
    return f"{key} {there!r} there, {now!r} now"


def _temp_owner(name: str) -> tuple[int, str] | None:
    """(pid, host) of a temporary file's name from :func:`atomic_write`, None for any other name."""
    if not name.startswith(TEMP_PREFIX) or ".partial" not in name:
        return None
    owner, _, rest = name[len(TEMP_PREFIX) :].partition(".")
    pid, at, host = owner.partition("@")
    if not at or not rest or not pid.isdigit():
        return None
    return int(pid), host


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_own_stale_temp_files(folder: Path) -> None:
    """Remove the temporary files that a killed segfix process on this machine left directly in ``folder``.

    Files of processes that still run (another shard writing to the same folder) or of other machines (a shared
    file system) are left alone, and so is everything else: links are never followed or removed."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        owner = _temp_owner(entry.name)
        if owner is None or owner[1] != HOST or not entry.is_file(follow_symlinks=False):
            continue
        if owner[0] != os.getpid() and not _process_alive(owner[0]):
            Path(entry.path).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def display_name(name: str) -> str:
    """A file name as it can be printed: bytes that are not UTF-8 (kept by Python as surrogates) and control
    characters such as a line break are shown as escapes."""
    shown = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in shown)


def walk_files(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The visible files under ``folder`` (sorted; hidden names skipped), following linked subfolders once, and
    the entries that are not readable files, each ``(relative name, reason)``: broken links, special files, and
    links to a folder already read (a loop, or the same folder twice)."""
    root = Path(folder)
    seen = {os.path.realpath(root)}
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for name in sorted(dirnames):
            if name.startswith("."):
                continue
            real = os.path.realpath(os.path.join(dirpath, name))
            if real in seen:
                rel = str(Path(dirpath, name).relative_to(root))
                problems.append((rel, f"{display_name(rel)} links to a folder that is read already ({real})"))
                continue
            seen.add(real)
            keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath, name)
            if path.is_file():
                files.append(path)
            else:
                what = "a broken link" if path.is_symlink() else "not a regular file"
                rel = str(path.relative_to(root))
                problems.append((rel, f"{display_name(rel)} is {what}"))
    return sorted(files), sorted(problems)


def _open_checked(path: Path) -> Image.Image:
    """Open an image and check its header's size, before any pixel is decoded."""
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file (Pillow cannot identify its format)") from None
    width, height = img.size
    if width * height > MAX_FILE_PIXELS:
        img.close()
        raise ValueError(
            f"{path}: {width}x{height} pixels; expected at most {MAX_FILE_PIXELS} pixels (8192x8192): "
            "split larger images into tiles"
        )
    return img


def image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image file, from its header (nothing is decoded)."""
    with _open_checked(Path(path)) as img:
        return img.size[1], img.size[0]


def write_png(path: Path, array: np.ndarray) -> None:
    """Write a uint8/uint16 label map or an RGB uint8 image as PNG, atomically."""
    atomic_write(Path(path), lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def read_image(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB.

    8-bit files of any mode (grey, palette, RGBA, CMYK, ...) are converted by Pillow; 16-bit grey files are
    brought to 8 bits by their full range (``round(v / 257)``), not clipped; 32-bit integer or float files,
    whose range no file states, are refused."""
    with _open_checked(Path(path)) as img:
        if img.mode in _SIXTEEN_BIT or (img.mode == "I" and _fits_16_bits(img)):
            grey = np.asarray(img).astype(np.float64) / 257.0
            return np.repeat(np.rint(grey).astype(np.uint8)[..., None], 3, axis=2)
        if img.mode in ("I", "F"):
            raise ValueError(
                f"{path}: expected an 8- or 16-bit image, got a {'float' if img.mode == 'F' else '32-bit'} "
                f"image (mode {img.mode}) whose range is unknown; save it as 8-bit RGB"
            )
        return np.asarray(img.convert("RGB"))


def _fits_16_bits(img: Image.Image) -> bool:
    low, high = cast(tuple[int, int], img.getextrema())  # one band: (min, max)
    return 0 <= low and high <= 65535


@dataclass(frozen=True)
class LabelStyle:
    """How a label file stored its ids, so that a refined map is written back as it came: the PIL ``mode``
    (``'L'``, ``'P'``, ``'1'``, ``'I;16'``) and, for palette files, the palette and transparency."""

    mode: str
    palette: Any = None
    transparency: Any = None


_LABEL_MODES = ("L", "P", "1", "I", *_SIXTEEN_BIT)
_LABEL_DTYPES = {"L": np.uint8, "P": np.uint8, "1": bool, "I": np.int32}  # else 16-bit


def label_style(img: Image.Image, name: str) -> LabelStyle:
    """The style of a label-id image, or an error naming ``name``: colour images hold no ids, and images with
    an alpha or second channel and float images are no label maps."""
    if img.mode not in _LABEL_MODES:
        raise ValueError(
            f"{name}: expected a single-channel label-id image (mode L, P, 1, I or I;16), got mode {img.mode}"
            f"{'; colour-coded maps must be converted to ids first' if img.mode.startswith('RGB') else ''}"
        )
    return LabelStyle(img.mode, img.getpalette() if img.mode == "P" else None, img.info.get("transparency"))


def label_image(labels: np.ndarray, style: LabelStyle) -> Image.Image:
    """``labels`` as an image in ``style``: its mode (ids in that mode's dtype), palette and transparency."""
    image = Image.fromarray(labels.astype(_LABEL_DTYPES.get(style.mode, np.uint16)))
    if style.palette is not None:
        image.putpalette(style.palette)  # an L image with a palette is a P image with the same ids
    if style.transparency is not None:
        image.info["transparency"] = style.transparency
    return image


def read_label_with_style(path: Path) -> tuple[np.ndarray, LabelStyle]:
    """Read a label-id image as an integer (or, for 1-bit files, bool) ``(H, W)`` array and its style
    (:func:`label_style` says what is refused)."""
    with _open_checked(Path(path)) as img:
        style = label_style(img, str(path))
        array = np.asarray(img)
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D label map, got shape {array.shape}")
    return array, style


def read_label(path: Path) -> np.ndarray:
    """Read a label-id image as an integer (or, for 1-bit files, bool) ``(H, W)`` array."""
    return read_label_with_style(path)[0]


def write_label(path: Path, labels: np.ndarray, style: LabelStyle) -> None:
    """Write ``labels`` as PNG in ``style`` (its mode, palette and transparency), atomically."""
    if style.mode == "I":  # 32-bit ids: PNG holds them in 16 bits
        if labels.size and (labels.min() < 0 or labels.max() > 65535):
            raise ValueError(f"{path}: labels outside 0..65535 cannot be written as a 16-bit PNG")
        style = dataclasses.replace(style, mode="I;16")
    image = label_image(labels, style)
    extra = {"transparency": style.transparency} if style.transparency is not None else {}
    atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG", **extra))


# Dataset suffixes between a shared key and the extension (Cityscapes' label files, prediction files).
_STRIP = (
    "_gtFine_labelIds",
    "_gtFine_labelTrainIds",
    "_gtFine_trainIds",
    "_gtFine_color",
    "_pred",
    "_gtFine_instanceIds",
)


def match_stem(name: str) -> str:
    """The key shared by an image and its label, prediction and offsets files: the file stem without dataset
    suffixes (``_gtFine_labelIds``, ``_pred``, ...) and without Cityscapes' ``_leftImg8bit``."""
    stem = Path(name).stem
    for suffix in _STRIP:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem.removesuffix("_leftImg8bit")
