"""Compiled CPU kernels (numba). Each has a pure numpy/torch twin that is the specification.

numba is a dependency of segfix-pytorch; where it cannot be installed, ``HAVE_NUMBA`` is False and callers use
their numpy fallback. Results are identical either way (tests compare both).
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
import threading

import numpy as np

_logger = logging.getLogger(__name__)

try:  # a dependency, but the package still works where it cannot be installed
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - depends on the environment
    numba = None  # type: ignore[assignment]
    HAVE_NUMBA = False

__all__ = ["HAVE_NUMBA", "shift_single", "vote_flat", "vote_kernel_ready"]


def _shift_once(labels, dy, dx, scale, out):  # pragma: no cover - compiled by numba
    """``out[p] = labels[clamp(p + scale * offset[p])]`` in one branch-free pass, rows split across threads.

    A zero offset gathers the pixel itself, so no test is needed. Used for offsets wider than int8.
    """
    height, width = labels.shape
    for i in numba.prange(height):
        for j in range(width):
            y = min(max(i + scale * np.int64(dy[i, j]), 0), height - 1)
            x = min(max(j + scale * np.int64(dx[i, j]), 0), width - 1)
            out[i, j] = labels[y, x]


_ROW_CHUNKS = 16  # parallel tasks per map: a few per thread, so that an uneven band still balances


def _shift_once_int8(labels, dy, dx, scale, out):  # pragma: no cover - compiled by numba
    """The same gather for int8 offsets, row by row: copy the row, then gather only its moving pixels.

    SegFix offsets are non-zero only in a band along boundaries (5-15 % of an image). Each row's moving pixels
    are found in two branch-free passes: the 8-pixel words that hold a non-zero offset (one 64-bit test each),
    then the pixels of those words, each index stored and the count advanced by the test's 0 or 1. The gather
    then visits only those pixels. No step depends on a branch the data decides, so pixels scattered at random
    cost about as much as a band (a per-group branch ran at 6x the memory floor on AMD Zen 4 for them).
    """
    height, width = labels.shape
    src = labels.ravel()
    dst = out.ravel()
    last_row = np.int64(height - 1)
    last_col = np.int64(width - 1)
    words = width // 8
    rows_per_chunk = (height + _ROW_CHUNKS - 1) // _ROW_CHUNKS
    for chunk in numba.prange(_ROW_CHUNKS):
        found = np.empty(words + 1, np.uint32)
        cols = np.empty(width + 1, np.uint32)
        for i in range(chunk * rows_per_chunk, min((chunk + 1) * rows_per_chunk, height)):
            base = i * width
            row_out = dst[base : base + width]
            row_out[:] = src[base : base + width]
            row_dy = dy[i]
            row_dx = dx[i]
            dy_words = row_dy[: words * 8].view(np.uint64)
            dx_words = row_dx[: words * 8].view(np.uint64)
            # Unsigned indices spare numba's negative-index test on every access (all are non-negative).
            n = 0
            for w in range(words):
                found[np.uint64(n)] = np.uint32(w)
                n += (dy_words[np.uint64(w)] | dx_words[np.uint64(w)]) != 0
            k = 0
            for t in range(n):
                first = np.uint64(found[np.uint64(t)]) * np.uint64(8)
                for q in range(8):
                    j = first + np.uint64(q)
                    cols[np.uint64(k)] = np.uint32(j)
                    k += (row_dy[j] | row_dx[j]) != 0
            for j in range(words * 8, width):  # the pixels after the row's last whole word
                cols[np.uint64(k)] = np.uint32(j)
                k += (row_dy[j] | row_dx[j]) != 0
            for t in range(k):
                j = np.uint64(cols[np.uint64(t)])
                y = min(max(i + scale * np.int64(row_dy[j]), 0), last_row)
                x = min(max(np.int64(j) + scale * np.int64(row_dx[j]), 0), last_col)
                row_out[j] = src[np.uint64(y * width + x)]


def _shift_walk(labels, dy, dx, scale, iterations, out):  # pragma: no cover - compiled by numba
    """``iterations`` steps along the field from every pixel; see :func:`segfix.shift_labels`."""
    height, width = labels.shape
    for i in numba.prange(height):
        for j in range(width):
            # prange indices are unsigned; mixing them with signed steps would promote to float
            y = np.int64(i)
            x = np.int64(j)
            for _ in range(iterations):
                step_y = np.int64(dy[y, x])
                step_x = np.int64(dx[y, x])
                y = min(max(y + scale * step_y, 0), height - 1)
                x = min(max(x + scale * step_x, 0), width - 1)
            out[i, j] = labels[y, x]


def _vote_once(
    src, dst, b, y, x, steps, height, width, weights, min_vote_share, ignore, has_ignore, stamps, iteration
):  # pragma: no cover - compiled by numba
    """One direction vote over flat ``(N * H * W)`` label maps: the moving pixel ``(b, y, x)[k]`` takes the label
    of its candidates ``clamp((y, x)[k] + steps[d])`` that the most weight points at, if that weight exceeds
    ``min_vote_share``; see :func:`segfix.vote_labels`. Compiled by numba. ``dst`` starts as a copy of ``src``.

    An ignore pixel never changes. After the first vote (``iteration`` 0), a pixel is voted on again only where
    ``stamps`` holds this ``iteration``: where one of its candidates changed in the last vote
    (:func:`_mark_changed`). Elsewhere the vote would see the labels it saw last time and give the label the
    pixel already has.

    A label is scored once, at its first direction, adding the weights in direction order; the first best
    direction wins ties, as in the torch twin. Candidate indices are computed here, never stored. Most moving
    pixels see one label in every direction (the band is wider than the edge): that label then wins with the
    whole weight, summed in the same order, and the comparisons between directions are skipped (half the time
    of a 1024x2048 vote).
    """
    moving = y.shape[0]
    directions = steps.shape[0]
    for k in numba.prange(moving):
        base = b[k] * height * width
        yk = y[k]
        xk = x[k]
        here = base + yk * width + xk
        if (iteration > 0 and stamps[here] != iteration) or (has_ignore and src[here] == ignore):
            continue
        first = src[_candidate(base, yk, xk, steps[0, 0], steps[0, 1], height, width)]
        uniform = not (has_ignore and first == ignore)
        total = weights[k, 0]
        for d in range(1, directions):
            total += weights[k, d]
            if src[_candidate(base, yk, xk, steps[d, 0], steps[d, 1], height, width)] != first:
                uniform = False
        if uniform:
            if total > min_vote_share:
                dst[here] = first
            continue
        best_share = np.float32(-1.0)
        best_label = src[here]
        for d in range(directions):
            label = src[_candidate(base, yk, xk, steps[d, 0], steps[d, 1], height, width)]
            if has_ignore and label == ignore:
                continue
            seen = False
            for e in range(d):
                if src[_candidate(base, yk, xk, steps[e, 0], steps[e, 1], height, width)] == label:
                    seen = True
                    break
            if seen:  # scored at its first direction
                continue
            share = weights[k, d]
            for e in range(d + 1, directions):
                if src[_candidate(base, yk, xk, steps[e, 0], steps[e, 1], height, width)] == label:
                    share += weights[k, e]
            if share > best_share:
                best_share = share
                best_label = label
        if best_share > min_vote_share:
            dst[here] = best_label


def _mark_changed(src, dst, b, y, x, steps, height, width, stamps, iteration):  # pragma: no cover - numba
    """Stamp ``iteration`` on every pixel one of whose candidates is a moving pixel that this vote changed
    (``dst != src``): the pixels ``q`` with ``clamp(q + steps[d]) == p``. Inside the map that is ``p - steps[d]``;
    on its border, clamping brings a run of pixels to ``p``. Stamps of one value, so concurrent writes agree."""
    for k in numba.prange(y.shape[0]):
        base = b[k] * height * width
        here = base + y[k] * width + x[k]
        if dst[here] == src[here]:
            continue
        for d in range(steps.shape[0]):
            top, bottom = _sources(y[k], steps[d, 0], height)
            left, right = _sources(x[k], steps[d, 1], width)
            for qy in range(top, bottom + 1):
                for qx in range(left, right + 1):
                    stamps[base + qy * width + qx] = iteration


def _clamp_sources(target, step, length):  # pragma: no cover - compiled by numba
    """The first and last ``q`` in ``[0, length)`` with ``clamp(q + step, 0, length - 1) == target``."""
    first = target - step if target > 0 else 0
    last = target - step if target < length - 1 else length - 1
    return max(first, 0), min(last, length - 1)


def _candidate_index(base, y, x, dy, dx, height, width):  # pragma: no cover - compiled by numba
    """Flat index of the pixel ``(y + dy, x + dx)``, clamped into the ``height x width`` map at ``base``."""
    return base + min(max(y + dy, 0), height - 1) * width + min(max(x + dx, 0), width - 1)


def private_cache_dir() -> str | None:
    """``<tmp>/segfix-numba-<uid>``, made if missing, when it is a real folder of this user's that only this user
    can write (a folder another user made could hold code that numba would load); else None."""
    folder = os.path.join(tempfile.gettempdir(), f"segfix-numba-{os.getuid() if hasattr(os, 'getuid') else 0}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError:
        return None
    own = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    private = stat.S_ISDIR(info.st_mode) and own and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return folder if private and os.access(folder, os.W_OK) else None


def _compile(fn):
    """``fn`` compiled by numba, its machine code cached across processes: beside the source, or in the user's
    cache folder (numba's own choice), or where neither can be written (a read-only install run by a user
    without a home) in :func:`private_cache_dir`. Without any, numba refuses ``cache=True`` at import; the kernel
    is then compiled in every process (about 5 s, in the background: see :mod:`segfix.ops.vote`)."""
    options = dict(nogil=True, parallel=True)
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        folder = private_cache_dir()
        if folder is None:
            _logger.info("numba kernels are compiled in this process: no folder to cache them in")
            return numba.njit(**options)(fn)
        previous = numba.config.CACHE_DIR
        numba.config.CACHE_DIR = folder  # read when the cache is set up, so only these kernels use it
        try:
            return numba.njit(cache=True, **options)(fn)
        finally:
            numba.config.CACHE_DIR = previous


if HAVE_NUMBA:
    shift_kernel = _compile(_shift_once)
    shift_kernel_int8 = _compile(_shift_once_int8)
    walk_kernel = _compile(_shift_walk)
    _candidate = numba.njit(inline="always")(_candidate_index)  # looked up by _vote_once when it compiles
    _sources = numba.njit(inline="always")(_clamp_sources)  # looked up by _mark_changed
    vote_kernel = _compile(_vote_once)
    mark_kernel = _compile(_mark_changed)
else:  # pragma: no cover
    shift_kernel = shift_kernel_int8 = walk_kernel = vote_kernel = mark_kernel = None


def shift_single(labels: np.ndarray, dy: np.ndarray, dx: np.ndarray, scale: int, iterations: int) -> np.ndarray:
    """Run the compiled kernels on one C-contiguous ``(H, W)`` map; bool labels travel as uint8."""
    as_bytes = labels.dtype == np.bool_
    source = labels.view(np.uint8) if as_bytes else labels
    out = np.empty_like(source)
    if iterations == 1 and dy.dtype == np.int8 and dx.dtype == np.int8:
        shift_kernel_int8(source, dy, dx, np.int64(scale), out)
    elif iterations == 1:
        shift_kernel(source, dy, dx, np.int64(scale), out)
    else:
        walk_kernel(source, dy, dx, np.int64(scale), np.int64(iterations), out)
    return out.view(np.bool_) if as_bytes else out


def vote_flat(
    labels: np.ndarray,
    shape: tuple[int, int],
    pixels: tuple[np.ndarray, np.ndarray, np.ndarray],
    steps: np.ndarray,
    weights: np.ndarray,
    min_vote_share: float,
    ignore_index: int | None,
    iterations: int,
) -> np.ndarray:
    """``iterations`` compiled votes on a flat C-contiguous ``(N * H * W)`` label array; a new array is returned
    and ``labels`` kept.

    ``shape`` is (H, W); ``pixels`` the moving pixels' (b, y, x) int64 indices (K,); ``steps`` the (D, 2) int64
    (dy, dx) candidate offsets; ``weights`` (K, D) float32."""
    has_ignore = ignore_index is not None and _fits(ignore_index, labels.dtype)  # else it never occurs
    ignore = labels.dtype.type(ignore_index if has_ignore else 0)
    height, width = np.int64(shape[0]), np.int64(shape[1])
    b, y, x = pixels
    # Which pixels a vote changed, to vote again only near them (iterations after the first change less and
    # less: at 1024x2048 the last of five votes redid a few % of the pixels).
    stamps = np.zeros(labels.size if iterations > 1 else 1, np.uint16)
    out = labels
    for iteration in range(iterations):
        src, out = out, out.copy()
        vote_kernel(
            src, out, b, y, x, steps, height, width, weights, np.float32(min_vote_share), ignore, has_ignore, stamps,
            np.uint16(iteration),  # iterations are bounded (MAX_ITERATIONS) far below 65535
        )  # fmt: skip
        if iteration + 1 < iterations:
            mark_kernel(src, out, b, y, x, steps, height, width, stamps, np.uint16(iteration + 1))
    return out


def _fits(value: int, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return info.min <= value <= info.max


_VOTE_WARM = threading.Event()
_VOTE_WARMING = threading.Lock()
_vote_warm_up_started = False


def vote_kernel_ready() -> bool:
    """Whether the compiled vote is set up in this process; the first call starts setting it up in a background
    thread (numba's start takes about half a second, which a first refine need not wait for)."""
    global _vote_warm_up_started
    if _VOTE_WARM.is_set():
        return True
    with _VOTE_WARMING:
        if not _vote_warm_up_started:
            _vote_warm_up_started = True
            threading.Thread(target=_warm_up_vote, name="segfix-numba-warm-up", daemon=True).start()
    return False


def _warm_up_vote() -> None:
    """Run the vote kernels once on a tiny map for the common label dtypes (loading their cached compilations);
    two votes in a row, so that the kernel marking what changed is loaded too."""
    try:
        for dtype in (np.uint8, np.int64):
            labels = np.zeros(4, dtype)
            pixels = (np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64))
            steps = np.zeros((8, 2), np.int64)
            vote_flat(labels, (2, 2), pixels, steps, np.full((1, 8), 0.125, np.float32), 0.0, 255, 2)
        _VOTE_WARM.set()
    except Exception as error:  # noqa: BLE001 - the torch vote keeps serving; say why the kernel does not
        _logger.warning("the compiled vote could not be set up (%s); the torch vote serves", error)
