"""Promise: nothing a user gave is overwritten, deleted or taken as done (docs/security.md).

Each test states the case as a user met it; on the code before its fix each failed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

import segfix
from helpers import voronoi_labels
from segfix.cli import main
from segfix.jobs import formats


def test_refine_never_removes_files_it_did_not_make(tmp_path):
    preds, offs, out = tmp_path / "preds", tmp_path / "offs", tmp_path / "out"
    for folder in (preds, offs, out / "thesis"):
        folder.mkdir(parents=True)
    labels = voronoi_labels((20, 24), 4, 3, seed=1)
    Image.fromarray(labels).save(preds / "a.png")
    formats.write_offsets(offs / "a.npz", segfix.boundary_targets(labels, min_pixels=0).offsets())
    precious = out / "thesis" / ".chapter1.partial.tex"
    precious.write_text("work")
    also_precious = out / ".a.partial.png"  # the old temp-file pattern, beside an output
    also_precious.write_text("mine")
    assert main(["refine", str(preds), "--offsets", str(offs), "--output", str(out)]) == 0
    assert precious.read_text() == "work" and also_precious.read_text() == "mine"


def test_input_folder_inside_the_output_is_untouched(tmp_path):
    out = tmp_path / "out"
    preds, offs = out / "preds", out / "offs"
    preds.mkdir(parents=True)
    offs.mkdir()
    labels = voronoi_labels((20, 24), 4, 3, seed=2)
    Image.fromarray(labels).save(preds / "a.png")
    formats.write_offsets(offs / "a.npz", segfix.boundary_targets(labels, min_pixels=0).offsets())
    temp_lookalike = preds / ".segfix-tmp-1@host.a.1234.partial.png"
    temp_lookalike.write_text("user file in an input folder")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["refine", str(preds), "--offsets", str(offs), "--output", str(out)]) == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing written or removed


def test_a_users_file_in_the_output_is_neither_overwritten_nor_taken_as_done(tmp_path, capsys):
    preds, offs, out = tmp_path / "preds", tmp_path / "offs", tmp_path / "out"
    for folder in (preds, offs, out):
        folder.mkdir()
    labels = voronoi_labels((20, 24), 4, 3, seed=3)
    for name in ("a", "b"):
        Image.fromarray(labels).save(preds / f"{name}.png")
        formats.write_offsets(offs / f"{name}.npz", segfix.boundary_targets(labels, min_pixels=0).offsets())
    (out / "a.png").write_bytes(b"the user's own file")
    assert main(["refine", str(preds), "--offsets", str(offs), "--output", str(out)]) == 1
    assert (out / "a.png").read_bytes() == b"the user's own file"
    err = capsys.readouterr().err
    assert "a.png" in err and "not written by segfix" in err
    assert (out / "b.png").is_file()
    # a second run skips b (its own output) and still refuses a
    assert main(["refine", str(preds), "--offsets", str(offs), "--output", str(out)]) == 1
    assert "1 already done" in capsys.readouterr().out


def test_label_files_are_written_back_in_their_own_mode_and_palette(tmp_path, capsys):
    labels = voronoi_labels((20, 24), 4, 3, seed=11)
    preds, offs = tmp_path / "preds", tmp_path / "offs"
    palette = Image.fromarray(labels).convert("L")
    palette.putpalette([v for c in range(256) for v in (c * 7 % 256, c * 13 % 256, c * 29 % 256)])
    preds.mkdir()
    palette.save(preds / "p.png", transparency=3)
    Image.fromarray(labels > 1).save(preds / "one.png")
    Image.fromarray(labels.astype(np.uint16) * 300).save(preds / "i16.png")
    offsets = segfix.boundary_targets(voronoi_labels((20, 24), 5, 3, seed=12), min_pixels=0).offsets()
    for name in ("p", "one", "i16", "la"):
        formats.write_offsets(tmp_path / "offs" / f"{name}.npz", offsets)
    Image.new("LA", (24, 20)).save(preds / "la.png")
    out = tmp_path / "out"
    assert main(["refine", str(preds), "--offsets", str(offs), "--output", str(out)]) == 1
    assert "la.png: expected a single-channel label-id image (mode L, P, 1, I or I;16), got mode LA" in (
        capsys.readouterr().err
    )
    for name in ("p", "one", "i16"):
        with Image.open(preds / f"{name}.png") as before, Image.open(out / f"{name}.png") as after:
            assert after.mode == before.mode and after.getpalette() == before.getpalette()
            assert after.info.get("transparency") == before.info.get("transparency")
            stored = np.asarray(before)
            expected = segfix.refine_semantic(stored.astype(np.int64), offsets, ignore_index=255)
            np.testing.assert_array_equal(np.asarray(after).astype(np.int64), expected)
