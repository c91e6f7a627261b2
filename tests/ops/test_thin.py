"""Thin parts of a label map and the refinement guard that leaves them as they are."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage

import segfix
from helpers import noise_and_blob_maps, voronoi_labels
from segfix.hub.settings import DecisionSettings
from segfix.ops.field import RefinementField, apply_field
from segfix.prediction.decision import decide
from segfix.prediction.outputs import NetworkOutputs


def scipy_thin(labels: np.ndarray, radius: int) -> np.ndarray:
    """Reference: per class, the pixels that scipy's binary opening with a (2r+1)^2 square removes."""
    square = np.ones((2 * radius + 1, 2 * radius + 1), bool)
    out = np.zeros(labels.shape, bool)
    for c in np.unique(labels):
        mask = labels == c
        out |= mask & ~ndimage.binary_opening(mask, structure=square)
    return out


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_thin_parts_match_scipy_opening_class_by_class(radius):
    for labels in noise_and_blob_maps(radius, 5, blob_size=3, min_side=2):  # blobs with thin bridges, not only noise
        np.testing.assert_array_equal(segfix.thin_parts(labels, radius, ignore_index=None), scipy_thin(labels, radius))


def test_a_one_pixel_pole_is_thin_and_a_three_pixel_one_is_not():
    labels = np.zeros((9, 14), np.uint8)
    labels[:, 4] = 1  # one pixel wide
    labels[:, 8:11] = 2  # three pixels wide
    thin = segfix.thin_parts(labels, 1)
    assert thin[:, 4].all() and not thin[:, 8:11].any()
    assert not thin[labels == 0].any()  # the background between them is 3 px wide or more
    assert segfix.thin_parts(labels, 2)[:, 8:11].all()  # under 5 px at radius 2


def test_ignore_pixels_are_never_thin_and_batches_torch_and_dtypes_agree():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (2, 15, 17)).astype(np.uint16)
    labels[0, 4, :] = 255
    thin = segfix.thin_parts(labels, 1)
    assert thin.dtype == bool and thin.shape == labels.shape and not thin[0, 4].any()
    expected = scipy_thin(labels[1].astype(np.int64), 1) & (labels[1] != 255)
    np.testing.assert_array_equal(thin[1], expected)
    np.testing.assert_array_equal(segfix.thin_parts(labels[1], 1), expected)
    tensor = segfix.thin_parts(torch.from_numpy(labels.astype(np.int32)), 1)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.bool
    np.testing.assert_array_equal(tensor.numpy(), thin)
    swapped = labels[1].astype(labels.dtype.newbyteorder())  # foreign byte order, as some files arrive
    np.testing.assert_array_equal(segfix.thin_parts(swapped, 1), expected)
    wide = labels[1].astype(np.int64)
    big = np.where(wide == 1, np.int64(2**40), wide)  # ids beyond float32's exact range
    assert big.max() == 2**40
    np.testing.assert_array_equal(segfix.thin_parts(big, 1), expected)


def test_read_only_and_mirrored_maps_give_the_mirrored_mask_and_stay_untouched():
    labels = np.random.default_rng(1).integers(0, 4, (19, 23)).astype(np.uint8)
    original = labels.copy()
    expected = scipy_thin(labels.astype(np.int64), 1)
    frozen = labels.copy()
    frozen.flags.writeable = False  # as a memory-mapped or decoded file arrives
    np.testing.assert_array_equal(segfix.thin_parts(frozen, 1), expected)
    mirrored = labels[:, ::-1]  # negative strides: torch cannot share them
    np.testing.assert_array_equal(segfix.thin_parts(mirrored, 1), scipy_thin(mirrored.astype(np.int64), 1))
    np.testing.assert_array_equal(segfix.thin_parts(labels, 1), expected)
    np.testing.assert_array_equal(labels, original)


def test_maps_smaller_than_the_window_are_all_thin():
    assert segfix.thin_parts(np.zeros((2, 9), np.uint8), 1).all()


def test_thin_parts_refuse_what_is_not_a_label_map():
    with pytest.raises(TypeError, match="integer dtype"):
        segfix.thin_parts(np.zeros((4, 4), np.float32), 1)
    with pytest.raises(ValueError, match="radius"):
        segfix.thin_parts(np.zeros((4, 4), np.uint8), 0)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(N, H, W\)"):
        segfix.thin_parts(np.zeros(4, np.uint8), 1)


def test_thin_parts_of_some_classes_are_the_thin_parts_masked_to_them():
    rng = np.random.default_rng(5)
    labels = ndimage.median_filter(rng.integers(0, 5, (31, 37)), 3).astype(np.int64)
    labels[3, :] = 255
    every = segfix.thin_parts(labels, 2)
    for classes in [(1,), [0, 3], (4, 2, 2), ()]:
        expected = every & np.isin(labels, list(classes))
        np.testing.assert_array_equal(segfix.thin_parts(labels, 2, classes=classes), expected)
        tensor = segfix.thin_parts(torch.from_numpy(labels[None]), 2, classes=classes)
        np.testing.assert_array_equal(tensor[0].numpy(), expected)
    many = tuple(range(0, 5, 2)) + tuple(range(100, 110))  # more ids than the comparison loop takes
    np.testing.assert_array_equal(segfix.thin_parts(labels, 2, classes=many), every & np.isin(labels, many))
    small = labels.astype(np.uint8)
    small[small == 255] = 44  # 300 would wrap onto 44 in uint8: it must match nothing
    np.testing.assert_array_equal(segfix.thin_parts(small, 2, classes=[300]), np.zeros(small.shape, bool))
    with pytest.raises(ValueError, match="classes: expected non-negative integer class ids, got"):
        segfix.thin_parts(labels, 1, classes=[1.5])
    with pytest.raises(ValueError, match="classes: expected a list of class ids, got 2"):
        segfix.thin_parts(labels, 1, classes=2)


def test_thin_classes_are_those_most_of_whose_pixels_are_thin():
    # A 1-px pole (all thin), a 3-px pole (thin at radius 2 only), a thick block whose ragged row is thin.
    labels = np.zeros((30, 60), np.uint8)
    labels[:, 10] = 1
    labels[:, 20:23] = 2
    labels[8:22, 35:55] = 3
    labels[7, 35:55:2] = 3  # a comb of single pixels on the block's top edge: 10 thin pixels of 290
    assert segfix.thin_classes([labels], 1) == (1,)
    assert segfix.thin_classes([labels], 2) == (1, 2)
    # Hand count at radius 1: class 3 has 10 thin pixels of 290, so it is thin only for shares up to 10/290.
    assert segfix.thin_classes([labels], 1, share=10 / 290) == (1, 3)
    assert segfix.thin_classes([labels], 1, share=10 / 290 + 1e-9) == (1,)
    # Pixels are pooled over maps, torch and numpy alike; ignore is no class; absent classes are not listed.
    other = np.full((30, 60), 255, np.uint8)
    other[:, :30] = 2  # a wide class-2 region outweighs the 3-px pole at radius 2
    pooled = [labels, torch.from_numpy(other)]
    assert segfix.thin_classes(pooled, 2) == (1,)
    assert segfix.thin_classes([np.full((5, 5), 255, np.uint8)], 1) == ()
    with pytest.raises(ValueError, match=r"share: expected a fraction in \(0, 1\], got 0"):
        segfix.thin_classes([labels], 1, share=0)


@pytest.mark.parametrize("vote", [False, True])
def test_the_guard_keeps_only_the_thin_parts_of_its_classes(vote):
    labels, outputs = pole_scene()
    labels[0, 8:11] = 2  # a one-pixel sliver of class 2 above a gap, thin like the pole
    labels[1, 8:11] = 0
    plain = DecisionSettings(boundary_threshold=0.5, direction_vote=vote, semantic_scale=1, iterations=2)
    for classes in [(1,), (2,), (1, 2)]:
        out = apply_field(decide(outputs, dataclasses.replace(plain, thin_guard=1, thin_guard_classes=classes)), labels)
        # The same as freezing, by hand, the thin pixels of those classes alone.
        frozen = decide(outputs, plain).frozen_at((segfix.thin_parts(labels, 1) & np.isin(labels, classes))[None])
        np.testing.assert_array_equal(out, apply_field(frozen, labels))
        assert (out[:, 5] == 1).all() == (1 in classes)  # the pole stays exactly when its class is guarded


def test_the_guard_s_classes_are_settings_and_travel_with_fields_and_files(tmp_path):
    from segfix.jobs.formats import read_field, write_field

    settings = DecisionSettings(thin_guard=2, thin_guard_classes=[6, 2, 2])
    assert settings.thin_guard_classes == (2, 6)
    for bad in ("2", [2, -1], [True], 3):
        with pytest.raises(ValueError, match="thin_guard_classes"):
            DecisionSettings(thin_guard_classes=bad)
    labels, outputs = pole_scene()
    field = decide(outputs, dataclasses.replace(settings, direction_vote=True, semantic_scale=1))
    assert field.thin_guard_classes == (2, 6)
    write_field(tmp_path / "f.npz", field)
    back = read_field(tmp_path / "f.npz", default_scale=2)
    assert (back.thin_guard, back.thin_guard_classes) == (2, (2, 6))
    np.testing.assert_array_equal(apply_field(back, labels), apply_field(field, labels))
    model = segfix.SegFix(backbone="test_resnet", out_indices=(1, 2, 3)).with_settings(
        thin_guard=3, thin_guard_classes=[2]
    )
    model.save_pretrained(tmp_path / "model")
    loaded = segfix.SegFix.from_pretrained(tmp_path / "model")
    assert (loaded.settings.decision.thin_guard, loaded.settings.decision.thin_guard_classes) == (3, (2,))


def pole_scene():
    """A 1-px pole whose every pixel the field would move onto the background, and a field that does so."""
    labels = np.zeros((10, 12), np.uint8)
    labels[:, 5] = 1
    labels[2:8, 8:11] = 2  # a thick part beside it, which may still move
    g = torch.Generator().manual_seed(0)
    prob = torch.full((1, 10, 12), 0.9)
    logits = torch.randn(1, 8, 10, 12, generator=g)
    logits[:, 0] += 6.0  # every pixel points one step left (direction 0 is (0, -1))
    return labels, NetworkOutputs(prob, logits, (10, 12))


@pytest.mark.parametrize("vote", [False, True])
def test_the_guard_keeps_thin_parts_and_refines_the_rest_as_without_it(vote):
    labels, outputs = pole_scene()
    assert tuple(segfix.direction_vectors(8)[0]) == (0, -1)
    plain = DecisionSettings(boundary_threshold=0.5, direction_vote=vote, semantic_scale=1, iterations=2)
    guarded = dataclasses.replace(plain, thin_guard=1)
    unguarded_out = apply_field(decide(outputs, plain), labels)
    assert not (unguarded_out[:, 5] == 1).any()  # without the guard the pole leaves its place
    out = apply_field(decide(outputs, guarded), labels)
    thin = segfix.thin_parts(labels, 1)
    np.testing.assert_array_equal(out[thin], labels[thin])
    # Elsewhere: the field minus the thin pixels, applied by hand.
    field = decide(outputs, plain)
    moving = field.moving[0].numpy() & ~thin
    if vote:
        prob = field.direction_prob.numpy()[~thin[field.moving[0].numpy()]]
        expected = segfix.vote_labels(labels, prob, moving, scale=1, iterations=2)
    else:
        offsets = np.where(moving[None], field.offsets[0].numpy(), 0)
        expected = segfix.refine_semantic(labels, offsets, scale=1, iterations=2)
    np.testing.assert_array_equal(out, expected)


def test_the_guard_is_found_on_the_map_given_not_on_half_refined_ones():
    labels, outputs = pole_scene()
    field = decide(outputs, DecisionSettings(semantic_scale=1, iterations=3, thin_guard=1))
    frozen = field.frozen_at(segfix.thin_parts(labels, 1)[None])
    no_guard = dataclasses.replace(frozen, thin_guard=0)
    np.testing.assert_array_equal(apply_field(field, labels), apply_field(no_guard, labels))
    # step by step on the same frozen field gives the same map
    step = no_guard.with_steps(iterations=1)
    np.testing.assert_array_equal(
        apply_field(step, apply_field(step, apply_field(step, labels))), apply_field(field, labels)
    )


def test_offsets_files_and_settings_carry_the_guard(tmp_path):
    from segfix.jobs.formats import read_field, write_field

    labels, outputs = pole_scene()
    field = decide(outputs, DecisionSettings(direction_vote=True, semantic_scale=1, thin_guard=2))
    assert field.thin_guard == 2
    assert decide(outputs, DecisionSettings(thin_guard=2), instance=True).thin_guard == 0  # masks are shifted
    write_field(tmp_path / "f.npz", field)
    back = read_field(tmp_path / "f.npz", default_scale=2)
    assert back.thin_guard == 2
    np.testing.assert_array_equal(apply_field(back, labels), apply_field(field, labels))
    with pytest.raises(ValueError, match="thin_guard"):
        DecisionSettings(thin_guard=-1)
    with pytest.raises(ValueError, match="thin_guard"):
        RefinementField(field.moving, field.offsets, thin_guard=-1)
    with pytest.raises(ValueError, match="pixels"):
        field.frozen_at(np.zeros((3, 3), bool))


def test_thin_parts_and_the_guard_on_every_device(device):
    labels, outputs = pole_scene()
    on_device = torch.from_numpy(labels).to(device)
    thin = segfix.thin_parts(on_device, 1)
    assert thin.device.type == device.type
    np.testing.assert_array_equal(thin.cpu().numpy(), scipy_thin(labels, 1))
    decision = DecisionSettings(direction_vote=True, semantic_scale=1, iterations=2, thin_guard=1)
    moved = NetworkOutputs(outputs.boundary_prob.to(device), outputs.direction_logits.to(device), outputs.size)
    refined = apply_field(decide(moved, decision), on_device)
    assert refined.device.type == device.type
    np.testing.assert_array_equal(refined.cpu().numpy(), apply_field(decide(outputs, decision), labels))


@pytest.mark.parametrize(
    ("offset", "ignore", "dtype"),
    [
        (0, 255, np.int64),
        (0, 255, np.uint8),
        (0, 255, np.uint16),
        (300, 255, np.uint16),
        (70_000, 255, np.int64),
        (0, -1, np.int64),
    ],
)  # histograms of the stored ids (uint8, uint16: torch has no uint16 bincount), of int64 ids, a sort for large ids,
# and a negative ignore label
def test_the_auto_guard_equals_thin_classes_then_thin_parts(offset, ignore, dtype):
    """thin_parts_of_thin_classes (one opening, counts by histogram) gives what naming the classes with
    thin_classes and then taking their thin_parts gives, on numpy and torch, batches pooled."""
    from segfix.ops.thin import thin_parts_of_thin_classes

    rng = np.random.default_rng(0)
    maps = np.stack([voronoi_labels((40, 48), 30, 6, seed=s).astype(np.int64) for s in range(3)])
    maps[:, :, 20] = 9  # class 9: a one-pixel pole through every map, and nowhere else
    maps[0, :4, :4] = ignore
    maps = np.where(maps == ignore, ignore, maps + offset) if offset else maps
    maps[rng.random(maps.shape) < 0.01] = ignore
    maps = maps.astype(dtype)
    classes = segfix.thin_classes([maps], 2, ignore_index=ignore)
    assert 9 + offset in classes and ignore not in classes
    expected = segfix.thin_parts(maps, 2, classes=classes, ignore_index=ignore)
    np.testing.assert_array_equal(thin_parts_of_thin_classes(maps, 2, ignore_index=ignore), expected)
    got = thin_parts_of_thin_classes(torch.from_numpy(maps), 2, ignore_index=ignore)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), expected)
    # Independently: a class is listed when at least half its non-ignore pixels are thin by scipy's opening.
    wide = maps.astype(np.int64)
    thin = np.stack([scipy_thin(m, 2) for m in wide]) & (wide != ignore)
    ids = [int(c) for c in np.unique(wide) if c != ignore]
    assert classes == tuple(c for c in ids if 2 * thin[wide == c].sum() >= (wide == c).sum())


def test_the_auto_guard_refines_a_read_only_map_without_a_warning():
    """Decoded label images are read-only arrays: counting their classes must neither warn nor write."""
    import warnings

    labels = voronoi_labels((48, 64), 12, 5, seed=3)
    labels[:, 30] = 7  # a one-pixel pole, of a class of its own
    labels.flags.writeable = False
    field = RefinementField(
        moving=np.ones((1, 48, 64), bool), offsets=np.ones((1, 2, 48, 64), np.int8), thin_guard=1,
        thin_guard_classes="auto", scale=1,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        refined = apply_field(field, labels)
    assert (refined[:, 30] == 7).all() and not labels.flags.writeable
