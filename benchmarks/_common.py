"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
from scipy import ndimage


def median_seconds(fn: Callable[[], object], *, repeat: int = 15, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def voronoi_labels(shape, num_regions, num_classes, seed=0) -> np.ndarray:
    """Blobby random scene: Voronoi cells with random classes."""
    rng = np.random.default_rng(seed)
    h, w = shape
    ys, xs = rng.integers(0, h, num_regions), rng.integers(0, w, num_regions)
    seeds = np.ones(shape, bool)
    seeds[ys, xs] = False
    iy, ix = ndimage.distance_transform_edt(seeds, return_distances=False, return_indices=True)
    classes = np.zeros(shape, np.int64)
    classes[ys, xs] = rng.integers(0, num_classes, num_regions)
    return classes[iy, ix].astype(np.uint8)


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(row, widths)) + " |")
