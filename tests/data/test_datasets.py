"""Dataset readers on tiny fake dataset trees built in a temp dir."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segfix.data import datasets as data


def write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def rgb(h=12, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_camvid_tree(tmp_path):
    for i in range(3):
        write(tmp_path / "train" / f"0001TP_{i:06d}.png", rgb(seed=i))
        label = np.full((12, 16), 3, np.uint8)
        label[0] = 11  # void
        label[5, 5] = 2
        write(tmp_path / "trainannot" / f"0001TP_{i:06d}.png", label)
    ds = data.CamVid(tmp_path, "train")
    assert len(ds) == 3 and ds.num_classes == 11 and ds.class_names[2] == "pole"
    s = ds[1]
    assert s.image.shape == (12, 16, 3) and s.name == "0001TP_000001"
    assert (s.label[0] == 255).all() and s.label[5, 5] == 2 and s.label[6, 6] == 3
    kept, held = ds.split(3)
    assert len(kept) == 2 and len(held) == 1 and held.pairs[0][0].name == "0001TP_000002.png"
    with pytest.raises(FileNotFoundError, match="SegNet layout"):
        data.CamVid(tmp_path, "val")


def test_holdout_words_parse_to_what_split_takes(tmp_path):
    assert data.parse_holdout("10") == 10 and data.parse_holdout("0") == 0
    assert data.parse_holdout("0001TP") == "0001TP" and data.parse_holdout("Seq05VD") == "Seq05VD"
    for bad in ("1", "-3", "", " ", "runs/0001TP", "0001*"):
        with pytest.raises(ValueError, match="holdout: expected"):
            data.parse_holdout(bad)
    for drive, count in (("0001TP", 2), ("0006R0", 3)):
        for i in range(count):
            write(tmp_path / "train" / f"{drive}_{i:06d}.png", rgb(seed=i))
            write(tmp_path / "trainannot" / f"{drive}_{i:06d}.png", np.full((12, 16), 3, np.uint8))
    kept, held = data.CamVid(tmp_path, "train").split(data.parse_holdout("0006R0"))
    assert [p.name[:6] for p, _ in held.pairs] == ["0006R0"] * 3 and len(kept) == 2


def test_cityscapes_tree(tmp_path):
    stem = "aachen_000000_000019"
    write(tmp_path / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png", rgb())
    label_ids = np.full((12, 16), 7, np.uint8)  # road
    label_ids[:, :4] = 26  # car
    label_ids[:, 4:6] = 3  # out of roi -> ignore
    label_ids[0, 0] = 33  # bicycle
    write(tmp_path / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png", label_ids)
    instance = label_ids.astype(np.uint16)  # Cityscapes stores instance ids as 16-bit PNG
    instance[:, :4] = 26001
    instance[:2, :2] = 26002
    write(tmp_path / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_instanceIds.png", instance)
    ds = data.Cityscapes(tmp_path, "train", instances=True)
    s = ds[0]
    assert s.name == f"{stem}_leftImg8bit" and ds.num_classes == 19
    assert s.label[5, 10] == 0 and s.label[5, 1] == 13 and s.label[5, 4] == 255 and s.label[0, 0] == 18
    assert s.instance_ids[0, 0] == 26002 and s.instance_ids[5, 1] == 26001
    segments = data.cityscapes_instance_segments(s.instance_ids)
    assert segments[5, 4] == 255 and segments[5, 10] == 7 and segments[5, 1] == 26001


def test_ade20k_tree(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    write(base / "images" / "training" / "ADE_train_00000001.jpg", rgb())
    ann = np.zeros((12, 16), np.uint8)
    ann[:, 8:] = 1
    ann[0, :] = 150
    write(base / "annotations" / "training" / "ADE_train_00000001.png", ann)
    ds = data.ADE20K(tmp_path, "training")
    s = ds[0]
    assert ds.num_classes == 150
    assert s.label[5, 2] == 255 and s.label[5, 10] == 0 and s.label[0, 3] == 149


def test_folder_pairs_and_mapping(tmp_path):
    write(tmp_path / "img" / "a.png", rgb())
    write(tmp_path / "img" / "b.png", rgb(seed=1))
    write(tmp_path / "lbl" / "a.png", np.full((12, 16), 5, np.uint8))
    ds = data.FolderPairs(str(tmp_path / "img" / "*.png"), str(tmp_path / "lbl" / "*.png"), 3, id_map={5: 1})
    assert len(ds) == 1 and (ds[0].label == 1).all()
    write(tmp_path / "lbl" / "b.png", np.full((10, 16), 1, np.uint8))
    ds = data.FolderPairs(str(tmp_path / "img" / "*.png"), str(tmp_path / "lbl" / "*.png"), 3)
    with pytest.raises(ValueError, match="does not match image"):
        ds[1]
    write(tmp_path / "lbl" / "c.png", rgb())
    write(tmp_path / "img" / "c.png", rgb())
    ds = data.FolderPairs(str(tmp_path / "img" / "*.png"), str(tmp_path / "lbl" / "*.png"), 3)
    with pytest.raises(ValueError, match="single-channel label-id image"):
        ds[2]
