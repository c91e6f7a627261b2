"""Training augmentation: flips remap directions as recomputed targets do; crops, padding and copy-paste."""

from __future__ import annotations

import numpy as np
import torch

import segfix
from helpers import TRAIN_ARGS, TinySet, saved_weights, voronoi_labels
from segfix.data.augment import TrainTransform, hflip
from segfix.training.train import train


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
    pasting = dict(TRAIN_ARGS, copy_paste=1.0, paste_classes=(1,), iterations=2)
    a = saved_weights(train([TinySet(4)], tmp_path / "a", **pasting))
    b = saved_weights(train([TinySet(4)], tmp_path / "b", **pasting))
    plain = saved_weights(train([TinySet(4)], tmp_path / "plain", **dict(pasting, copy_paste=0.0)))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], plain[k]) for k in a)  # the pasted images were trained on
