"""Pairing a job's files: by relative path, by dataset name endings, by a unique name anywhere, never by a guess."""

from __future__ import annotations

import pytest

from segfix.jobs.pairing import PartnerIndex, find_images


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_partners_are_found_by_place_by_dataset_endings_and_by_a_unique_name(tmp_path):
    images = tmp_path / "images"
    same_place = _touch(images / "seq1" / "0001.png")
    cityscapes = _touch(images / "aachen" / "aachen_000001_000019_leftImg8bit.png")
    _touch(images / "seq2" / "0001.jpg")
    index = PartnerIndex(
        images, (".png", ".jpg"), "images", ["0001.png", "0001.png", "aachen_000001_000019_gtFine_labelIds.png"]
    )
    assert index.find("seq1/0001.png") == same_place
    # predictions flat, images in city folders: the only image of that name anywhere
    assert index.find("aachen_000001_000019_gtFine_labelIds.png") == cityscapes
    # two images named 0001 and two items named 0001: no guess
    with pytest.raises(ValueError, match="cannot be told"):
        index.find("0001.png")
    with pytest.raises(FileNotFoundError, match="no images named 0002"):
        index.find("seq1/0002.png")


def test_find_images_keeps_image_files_only(tmp_path):
    _touch(tmp_path / "a.png"), _touch(tmp_path / "b.JPG"), _touch(tmp_path / "notes.txt")
    assert sorted(find_images(tmp_path)) == ["a", "b"]
