"""Files: atomic writes leave nothing half-written, label images come back in their own mode and palette."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segfix.data.files import atomic_write, match_stem, read_label_with_style, write_label


def test_atomic_write_leaves_no_file_when_the_write_fails(tmp_path):
    target = tmp_path / "out.txt"

    def failing(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing)
    assert list(tmp_path.iterdir()) == []
    atomic_write(target, lambda tmp: tmp.write_text("whole"))
    assert target.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("mode", ["L", "P", "I;16"])
def test_label_images_round_trip_in_their_mode(tmp_path, mode):
    labels = (np.arange(12).reshape(3, 4) % 5).astype(np.uint16 if mode == "I;16" else np.uint8)
    image = Image.fromarray(labels) if mode != "P" else Image.fromarray(labels, "L").convert("P")
    if mode == "P":
        image.putpalette([c for i in range(256) for c in (i, 255 - i, 7)])
    image.save(tmp_path / "a.png")
    stored, style = read_label_with_style(tmp_path / "a.png")
    write_label(tmp_path / "b.png", stored, style)
    with Image.open(tmp_path / "a.png") as a, Image.open(tmp_path / "b.png") as b:
        assert b.mode == a.mode and np.array_equal(np.array(a), np.array(b))
        assert a.getpalette() == b.getpalette()


def test_match_stem_drops_the_dataset_name_endings():
    assert match_stem("aachen_000001_000019_leftImg8bit") == match_stem("aachen_000001_000019_gtFine_labelIds")
    assert match_stem("0001TP_006690") == "0001TP_006690"
