"""The bounds segfix puts on what an input, a setting or a model config may ask for, in one place, and the range
check of a plain number against them (:func:`check_int_range`; every check of arrays and tensors is in
:mod:`segfix.checks`).

Each is far above any real use and far below what exhausts a machine; each is checked before anything is
allocated (docs/security.md names the test that holds it). Plain numbers, importable without torch, so that
the command line can show them in its help at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "check_int_range",
    "is_int",
    "MAX_BACKBONE_PARAMETERS",
    "MAX_EDGE_DISTANCE",
    "MAX_FEATURE_CHANNELS",
    "MAX_FILE_PIXELS",
    "MAX_ITERATIONS",
    "MAX_NETWORK_IMAGE_PIXELS",
    "MAX_PASSES",
    "MAX_PASS_PIXELS",
    "MAX_SCALE",
    "MAX_SHORT_SIDE",
    "MAX_THIN_GUARD",
    "MAX_WHOLE_PIXELS",
    "MAX_WINDOW",
]

MAX_ITERATIONS = 1024
"""Most steps a label may take along a field (shift or vote), from any source: a call, a flag, an offsets file,
a model config. The paper takes one step, the bundled models five."""

MAX_SCALE = 64
"""Largest offset scale a model config may hold (the paper: 2 for semantic maps, 1 for instances). A call's
``scale`` is not bounded: a step longer than the image lands on its border whatever its length."""

MAX_EDGE_DISTANCE = 16
"""Largest ``max_edge_distance`` (the recommended model: 2); each unit widens the window searched by 2 px."""

MAX_THIN_GUARD = 16
"""Largest ``thin_guard`` radius (the bundled model: 4); each unit widens the opening window by 2 px."""

MAX_WINDOW = 16384
"""Largest sliding-window side and stride."""

MAX_WHOLE_PIXELS = 1 << 28
"""Largest ``max_whole_pixels`` / ``max_network_pixels`` a config may set (a pass is bounded again, tighter, by
:data:`MAX_PASS_PIXELS`)."""

MAX_SHORT_SIDE = 16384
"""Largest ``min_short_side``."""

MAX_FILE_PIXELS = 1 << 26
"""Largest image, label or offsets file (in pixels, 8192 x 8192) the readers decode: a compressed PNG of a few
hundred kilobytes can hold a gigapixel, and decoding it would take gigabytes before any other check could run."""

MAX_PASS_PIXELS = 1 << 23
"""Most pixels of one image a network pass may see (8.4 M: 2048 x 4096). Measured with EfficientNet-Lite0 at
stride 2, a pass takes about 550 bytes per pixel (1.1 GB at 1024 x 2048), so this bounds a pass near 4.5 GB
whatever the settings ask for."""

MAX_PASSES = 4096
"""Most sliding-window passes one image may take (a 4096x8192 image in 256 px windows at two thirds overlap
takes 1,128; a 16 px window every pixel of a 400x600 photo would take 220,000 and never finish)."""

MAX_NETWORK_IMAGE_PIXELS = 1 << 26
"""Most pixels an image may have at the network's scale: sliding windows keep full-size accumulators (one
float per direction and pixel, 2 GiB at this size)."""

MAX_BACKBONE_PARAMETERS = 200_000_000
"""Largest backbone a model config may build (800 MB of float32 weights; HRNet-W48, the original's, has 65 M)."""

MAX_FEATURE_CHANNELS = 8192
"""Most feature channels the backbone levels may hand the decoder together (HRNet-W48: 720)."""


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_int_range(value: Any, name: str, low: int, high: int | None = None) -> int:
    """Require an integer (not a bool) in ``low..high`` (no upper bound for None); returns it as an int. The one
    integer check: every bound above, and every count a user gives, goes through it.

    Raises:
        ValueError: naming the range expected and the value that arrived.
    """
    if not is_int(value) or value < low or (high is not None and value > high):
        expected = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name}: expected an integer {expected}, got {value!r}")
    return int(value)
