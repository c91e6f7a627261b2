"""Training augmentation: flips remap directions as recomputed targets do; crops, padding and copy-paste."""

from __future__ import annotations

import numpy as np
import torch

import segfix
from helpers import TINY, voronoi_labels
from segfix.data.augment import TrainTransform, hflip
from segfix.data.datasets import Sample
from segfix.training.train import train

TINY_MODEL = TINY


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


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


COMMON = dict(
    model=TINY_MODEL,
    imagenet=False,
    batch_size=2,
    crop_size=32,
    workers=0,
    lr=0.01,
    progress=False,
    checkpoint_every=1,
    scale_range=(0.8, 1.2),
    seed=5,
)


def test_hflip_remaps_directions_like_recomputed_targets():
    label = voronoi_labels((40, 48), 8, 4, seed=2)
    kw = dict(min_pixels=0, border="replicate", zero_gradient="no_direction")
    t = segfix.boundary_targets(label, **kw)
    image = np.zeros((40, 48, 3), np.uint8)
    _, boundary, direction = hflip(image, t.boundary, t.direction)
    t_flipped = segfix.boundary_targets(label[:, ::-1].copy(), **kw)
    np.testing.assert_array_equal(boundary, t_flipped.boundary)
    on_edge = np.isclose((t_flipped.angle + 22.5) % 45, 0, atol=1e-3) | np.isclose(
        (t_flipped.angle + 22.5) % 45, 45, atol=1e-3
    )
    assert ((direction == t_flipped.direction) | on_edge).all()


def test_train_transform_shapes_and_padding():
    s = TinySet(1)[0]
    ex = TrainTransform(crop_size=64, scale_range=(1.0, 1.0))(s, np.random.default_rng(0))
    assert ex.image.shape == (3, 64, 64) and ex.image.dtype == np.float32
    assert ex.boundary.shape == (64, 64) and set(np.unique(ex.boundary)) <= {-1, 0, 1}
    assert (ex.boundary[40:, :] == -1).all() and (ex.direction[40:, :] == -1).all()  # padding is ignore
    on = ex.boundary == 1
    assert (ex.direction[on] >= -1).all() and (ex.direction[~on] == -1).all()


def test_paste_segments_copies_the_chosen_classes_pixel_for_pixel():
    from segfix.data.augment import paste_segments

    rng = np.random.default_rng(0)
    image, label = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), np.zeros((6, 8), np.int64)
    source_image = rng.integers(0, 255, (6, 9, 3), dtype=np.uint8)  # wider than the target: cropped
    source_label = np.ones((6, 9), np.int64)
    source_label[:, 3] = 2  # a one-pixel pole
    source_label[0, 0] = 6
    for seed in range(6):  # both mirrorings happen
        out_image, out_label = paste_segments(
            image, label, source_image, source_label, (2, 6), rng=np.random.default_rng(seed)
        )
        mirrored = np.random.default_rng(seed).random() < 0.5
        src_i, src_l = (source_image[:, ::-1], source_label[:, ::-1]) if mirrored else (source_image, source_label)
        pasted = np.isin(src_l[:, :8], (2, 6))
        np.testing.assert_array_equal(out_label, np.where(pasted, src_l[:, :8], label))
        np.testing.assert_array_equal(out_image, np.where(pasted[..., None], src_i[:, :8], image))
    assert label.max() == 0  # the inputs are left as they were


def test_copy_paste_runs_are_seeded(tmp_path):
    pasting = dict(COMMON, copy_paste=1.0, paste_classes=(1,), iterations=2)
    a = weights(train([TinySet(4)], tmp_path / "a", **pasting))
    b = weights(train([TinySet(4)], tmp_path / "b", **pasting))
    plain = weights(train([TinySet(4)], tmp_path / "plain", **dict(pasting, copy_paste=0.0)))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], plain[k]) for k in a)  # the pasted images were trained on
