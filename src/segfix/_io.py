"""File helpers for the command line: atomic writes and image/label reading with clear errors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["TEMP_PREFIX", "atomic_write", "is_temp_file", "match_stem", "read_image", "read_label", "write_png"]

TEMP_PREFIX = ".segfix-tmp-"
"""Name prefix of the temporary files :func:`atomic_write` creates: only files so named are ever cleaned up."""


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    A reader (or a re-run after a kill) sees either the old file or the complete new one, never a half-written
    file. ``tmp`` keeps ``path``'s suffix so that format-sniffing writers (Pillow, numpy) behave.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the user's usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_temp_file(path: Path) -> bool:
    """True for a temporary file left by :func:`atomic_write` (``.segfix-tmp-<stem>.<random>.partial<suffix>``)."""
    name = Path(path).name
    return name.startswith(TEMP_PREFIX) and ".partial" in name and Path(path).is_file()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_png(path: Path, array: np.ndarray) -> None:
    """Write a uint8/uint16 label map or an RGB uint8 image as PNG, atomically."""
    atomic_write(Path(path), lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def read_image(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def read_label(path: Path) -> np.ndarray:
    """Read a label-id PNG as an integer ``(H, W)`` array; refuses colour images, which hold no ids."""
    with Image.open(path) as img:
        if img.mode in ("RGB", "RGBA"):
            raise ValueError(
                f"{path}: expected a single-channel label-id image (mode L, P, I or I;16), "
                f"got mode {img.mode}; colour-coded maps must be converted to ids first"
            )
        array = np.asarray(img)
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D label map, got shape {array.shape}")
    return array


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
