"""File formats: label encodings, offsets (.npz / the original's .mat), Cityscapes instances, COCO RLE."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import segfix
from segfix.data import registry
from segfix.jobs import formats


def test_label_encodings_round_trip():
    label_ids = np.array([[7, 26, 0, 33], [3, 24, 7, 7]], np.uint8)
    train = registry.encode_labels(label_ids, "cityscapes-labelid")
    np.testing.assert_array_equal(train, [[0, 13, 255, 18], [255, 11, 0, 0]])
    np.testing.assert_array_equal(registry.decode_labels(train, label_ids, "cityscapes-labelid"), label_ids)
    ade = np.array([[0, 1, 150]], np.uint8)
    classes = registry.encode_labels(ade, "ade20k")
    np.testing.assert_array_equal(classes, [[255, 0, 149]])
    np.testing.assert_array_equal(registry.decode_labels(classes, ade, "ade20k"), ade)
    with pytest.raises(ValueError, match="label format"):
        registry.encode_labels(ade, "voc")


@pytest.mark.parametrize("suffix", [".npz", ".mat"])
def test_offsets_round_trip(tmp_path, suffix):
    offsets = np.random.default_rng(0).integers(-2, 3, (2, 5, 7)).astype(np.int8)
    formats.write_offsets(tmp_path / f"a{suffix}", offsets)
    back = formats.read_offsets(tmp_path / f"a{suffix}")
    assert back.dtype == np.int8
    np.testing.assert_array_equal(back, offsets)


def test_mat_layout_is_the_originals(tmp_path):
    from scipy.io import loadmat, savemat

    offsets = np.zeros((2, 3, 4), np.int8)
    offsets[0, 1, 2], offsets[1, 1, 2] = -1, 1
    formats.write_offsets(tmp_path / "x.mat", offsets)
    mat = loadmat(tmp_path / "x.mat")["mat"]
    assert mat.shape == (3, 4, 2) and mat[1, 2, 0] == -1 and mat[1, 2, 1] == 1  # H x W x (dy, dx)
    # A file written the way the original tester does (int64, compressed) reads back.
    savemat(tmp_path / "orig.mat", {"mat": np.moveaxis(offsets, 0, -1).astype(np.int64)}, do_compression=True)
    np.testing.assert_array_equal(formats.read_offsets(tmp_path / "orig.mat"), offsets)
    savemat(tmp_path / "bad.mat", {"offsets": mat})
    with pytest.raises(ValueError, match="key 'mat'"):
        formats.read_offsets(tmp_path / "bad.mat")
    with pytest.raises(ValueError, match=".npz or .mat"):
        formats.read_offsets(tmp_path / "x.txt")


def test_cityscapes_instances_round_trip(tmp_path):
    masks = np.zeros((2, 6, 8), bool)
    masks[0, 1:3, 1:4] = True
    masks[1, 3:, 5:] = True
    for i, m in enumerate(masks):
        Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / f"m{i}.png")
    (tmp_path / "img_pred.txt").write_text("m0.png 26 0.9\nm1.png 24 0.5\n")
    pred = formats.read_cityscapes_instances(tmp_path / "img_pred.txt")
    np.testing.assert_array_equal(pred.masks, masks)
    assert pred.classes == [26, 24] and pred.scores == [0.9, 0.5]
    out = tmp_path / "out" / "img_pred.txt"
    formats.write_cityscapes_instances(out, pred)
    again = formats.read_cityscapes_instances(out)
    np.testing.assert_array_equal(again.masks, masks)
    (tmp_path / "bad_pred.txt").write_text("m0.png 26\n")
    with pytest.raises(ValueError, match="expected 'mask.png classId score'"):
        formats.read_cityscapes_instances(tmp_path / "bad_pred.txt")


def test_coco_rle_round_trip_and_known_string():
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (1, 1), (13, 3)]:
        for density in (0.0, 0.3, 1.0):
            mask = rng.random(shape) < density
            np.testing.assert_array_equal(formats.rle_decode(formats.rle_encode(mask)), mask)
    # Column-major runs: a 3x2 mask [[0,1],[0,1],[1,1]] has runs 2 zeros, 4 ones.
    mask = np.array([[0, 1], [0, 1], [1, 1]], bool)
    assert formats.rle_decode({"size": [3, 2], "counts": [2, 4]}).tolist() == mask.tolist()
    assert formats.rle_encode(mask)["counts"] == "24"  # pycocotools' string for the runs [2, 4]
    # Runs longer than one 5-bit chunk, and the differential coding of later runs, survive the round trip.
    big = np.zeros((300, 400), bool)
    big[5:200, 3:300] = True
    big[0, 399] = True
    encoded = formats.rle_encode(big)
    assert isinstance(encoded["counts"], str)
    np.testing.assert_array_equal(formats.rle_decode(encoded), big)
    assert formats.rle_decode({"size": [300, 400], "counts": encoded["counts"].encode()}).sum() == big.sum()
    with pytest.raises(ValueError, match="cover"):
        formats.rle_decode({"size": [2, 2], "counts": [1, 1]})


def test_offsets_files_record_how_to_apply_them(tmp_path):
    offsets = np.zeros((2, 4, 5), np.int8)
    offsets[1, 2, 3] = -1
    formats.write_offsets(tmp_path / "a.npz", offsets, formats.OffsetSettings(scale=1, iterations=2))
    assert formats.read_offset_settings(tmp_path / "a.npz") == formats.OffsetSettings(1, 2, False)
    np.testing.assert_array_equal(formats.read_offsets(tmp_path / "a.npz"), offsets)
    formats.write_offsets(tmp_path / "old.npz", offsets)  # files without settings (and .mat) record nothing
    assert formats.read_offset_settings(tmp_path / "old.npz") == formats.OffsetSettings()
    formats.write_offsets(tmp_path / "a.mat", offsets, formats.OffsetSettings(scale=1))
    assert formats.read_offset_settings(tmp_path / "a.mat") == formats.OffsetSettings()


def test_offsets_files_of_earlier_versions_read_under_todays_names(tmp_path):
    """Files written before the settings had one name each said ``rule`` and ``min_share``: they read as
    ``direction_vote`` and ``min_vote_share``; an old name beside its successor is refused, not half read."""
    offsets = np.zeros((2, 4, 5), np.int8)
    offsets[1, 2, 2] = 1
    prob = np.full((1, 8), 0.125, np.float32)
    np.savez(tmp_path / "old.npz", offsets=offsets, rule=np.array("vote"), min_share=np.float64(0.3), vote_prob=prob)
    stored = formats.read_offset_settings(tmp_path / "old.npz")
    assert (stored.direction_vote, stored.min_vote_share) == (True, 0.3)
    field = formats.read_field(tmp_path / "old.npz", default_scale=2)
    assert field.direction_vote and field.min_vote_share == 0.3
    formats.write_field(tmp_path / "new.npz", field)
    with np.load(tmp_path / "new.npz") as data:
        assert "rule" not in data and "min_share" not in data and bool(data["direction_vote"])
    np.savez(tmp_path / "both.npz", offsets=offsets, min_share=np.float64(0.3), min_vote_share=np.float64(0.5))
    with pytest.raises(ValueError, match="both.npz: min_share: the old name of min_vote_share, given beside it"):
        formats.read_offset_settings(tmp_path / "both.npz")


def test_a_field_s_limit_on_the_distance_from_edges_travels_in_its_file(tmp_path):
    """``write_field`` records ``max_edge_distance``; ``read_field`` gives a field that refines as the one written
    (files written before the setting existed read as 0, no limit)."""
    offsets = np.zeros((1, 2, 3, 9), np.int8)
    offsets[0, 1] = 1  # every pixel steps right
    labels = np.zeros((3, 9), np.int64)
    labels[:, 6:] = 1
    field = segfix.field_from_offsets(offsets, scale=1, iterations=5, max_edge_distance=1)
    formats.write_field(tmp_path / "f.npz", field)
    assert formats.read_offset_settings(tmp_path / "f.npz").max_edge_distance == 1
    again = formats.read_field(tmp_path / "f.npz", default_scale=2)
    assert again.max_edge_distance == 1
    refined = segfix.apply_field(again, labels)
    np.testing.assert_array_equal(refined, segfix.apply_field(field, labels))
    np.testing.assert_array_equal(refined[0], [0, 0, 0, 0, 0, 1, 1, 1, 1])  # only column 5 had a 1 within 1 px
    formats.write_offsets(tmp_path / "old.npz", offsets[0], formats.OffsetSettings(scale=1, iterations=5))
    assert formats.read_field(tmp_path / "old.npz", default_scale=2).max_edge_distance == 0
