"""Train a tiny SegFix model on synthetic scenes, then evaluate the refinement it gives.

A real run uses a dataset reader instead (``segfix.data.datasets.CamVid(root)``, ``Cityscapes``, ``ADE20K``,
``FolderPairs``) and more steps; see docs/training.md. Run: ``python examples/train_eval.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from segfix import SegFix
from segfix.data.datasets import Sample
from segfix.metrics import SegmentationMetrics
from segfix.training.train import evaluate_offsets, train
from segfix.training.tuning import coarse_proxy


class Scenes:
    """Random Voronoi scenes whose colours follow the labels (a stand-in for a real dataset)."""

    num_classes, ignore_index = 4, 255

    def __init__(self, count: int, seed: int) -> None:
        self.samples = []
        rng = np.random.default_rng(seed)
        for i in range(count):
            seeds = np.ones((64, 64), bool)
            ys, xs = rng.integers(0, 64, 6), rng.integers(0, 64, 6)
            seeds[ys, xs] = False
            iy, ix = ndimage.distance_transform_edt(seeds, return_distances=False, return_indices=True)
            classes = np.zeros((64, 64), np.int64)
            classes[ys, xs] = rng.integers(0, 4, 6)
            label = classes[iy, ix]
            palette = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [220, 220, 80]])
            image = np.clip(palette[label] + rng.normal(0, 10, (64, 64, 3)), 0, 255).astype(np.uint8)
            self.samples.append(Sample(image=image, label=label, name=f"scene{i}"))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]


def main(steps: int = 30) -> None:
    with tempfile.TemporaryDirectory() as run:
        final = train(
            [Scenes(16, seed=0)],
            Path(run),
            iterations=steps,
            batch_size=4,
            crop_size=48,
            workers=0,
            imagenet=False,
            lr=0.05,
            progress=False,
            model=dict(backbone="test_resnet", out_indices=(1, 2, 3), decoder_channels=16, head_channels=16),
        )
        model = SegFix.from_pretrained(final)
    val = Scenes(4, seed=1)
    print("validation:", {k: round(v, 3) for k, v in evaluate_offsets(model, val).items()})
    before, after = SegmentationMetrics(4), SegmentationMetrics(4)
    for sample in val.samples:
        coarse = coarse_proxy(sample.label, 4, 255)
        before.update(coarse, sample.label)
        after.update(model.refine(sample.image, coarse), sample.label)
    b, a = before.compute(), after.compute()
    print(f"mIoU {b.miou:.2%} -> {a.miou:.2%}; boundary F@1px {b.mean_boundary_f[1]:.2%} -> {a.mean_boundary_f[1]:.2%}")


if __name__ == "__main__":
    main()
