"""References and small makers shared by the test modules, written once: import them with ``from helpers import
...`` (pytest puts this folder on the path, beside conftest.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
from PIL import Image

from segfix.data.datasets import Sample
from segfix.synthetic import reference_walk, voronoi_labels

__all__ = ["TINY", "TinySet", "free_port", "read_label", "reference_walk", "voronoi_labels"]

TINY = dict(backbone="test_resnet", out_indices=(1, 2, 3), decoder_channels=8, head_channels=8)
"""Network arguments of a SegFix model small enough to build and run in a test (timm's test_resnet)."""


def read_label(path: Path) -> np.ndarray:
    """A label PNG's stored values, as Pillow reads them (no palette, no conversion)."""
    with Image.open(path) as image:
        return np.array(image)


def free_port() -> int:
    """A local TCP port nothing listens on (once the probe is closed): for process groups and dead servers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TinySet:
    """In-memory dataset of Voronoi scenes whose image colours follow the labels."""

    num_classes, ignore_index, class_names = 4, 255, ["a", "b", "c", "d"]

    def __init__(self, n=6, size=(40, 48), seed=0):
        self.samples = []
        for i in range(n):
            label = voronoi_labels(size, 6, 4, seed=seed * 100 + i).astype(np.int64)
            image = np.stack([(label * 60) % 256, (label * 90) % 256, (label * 30) % 256], -1).astype(np.uint8)
            self.samples.append(Sample(image=image, label=label, name=f"s{i}"))

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]
