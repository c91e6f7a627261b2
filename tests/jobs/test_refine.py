"""Folder jobs (``segfix refine`` / ``segfix offsets``) and the files around them: a job writes only inside its
``--output``, at names it derives from the inputs' relative paths; every file a user gave keeps its bytes; each
prediction takes its own partner; an interrupted job finishes when run again.

The property test builds random trees (subfolders, equal names, odd names, linked folders, files the user keeps
in the output), interrupts the job at a random write, runs it again, and checks every file by its hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segfix
from helpers import TINY, read_label, voronoi_labels
from segfix.cli import main
from segfix.jobs import formats
from segfix.jobs.refine import refine_folder


def _labels(seed: int, size=(20, 24)) -> np.ndarray:
    return voronoi_labels(size, 4, 3, seed=seed)


def _offsets(seed: int, size=(20, 24)) -> np.ndarray:
    return segfix.boundary_targets(voronoi_labels(size, 5, 3, seed=1000 + seed), min_pixels=0).offsets()


def _hashes(root: Path, skip: Path | None = None) -> dict[str, str]:
    """sha256 of every file under ``root`` (links not followed), except under ``skip``."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            if skip is not None and (path == skip or skip in path.parents):
                continue
            if path.is_symlink():
                out[str(path)] = "link:" + os.readlink(path)
            else:
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ------------------------------------------------------------------------------------------ user files untouched


def test_instance_results_never_write_where_a_results_file_points(tmp_path):
    """A ``_pred.txt`` naming an absolute path or ``../`` (here: the user's own input mask) must not make segfix
    write there: masks are written beside the output txt under names derived from it."""
    res, offs, out = tmp_path / "res", tmp_path / "offs", tmp_path / "out"
    res.mkdir(), offs.mkdir()
    mask = np.zeros((20, 24), np.uint8)
    mask[4:14, 5:15] = 255
    Image.fromarray(mask).save(res / "m.png")
    Image.fromarray(mask).save(tmp_path / "outside.png")
    (res / "a_pred.txt").write_text(f"{res / 'm.png'} 26 0.9\n../outside.png 24 0.5\n")
    formats.write_offsets(offs / "a.npz", np.ones((2, 20, 24), np.int8))
    before = _hashes(tmp_path, skip=out)
    args = ["refine", str(res), "--offsets", str(offs), "--output", str(out), "--kind", "cityscapes-instance"]
    assert main(args) == 0
    assert _hashes(tmp_path, skip=out) == before  # the masks the results file names keep their bytes
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert written == ["a_pred.txt", "a_pred_0.png", "a_pred_1.png"]
    assert (out / "a_pred.txt").read_text() == "a_pred_0.png 26 0.9\na_pred_1.png 24 0.5\n"
    expected = segfix.refine_instances(np.stack([mask > 0, mask > 0]), np.ones((2, 20, 24), np.int8), scale=1)
    np.testing.assert_array_equal(read_label(out / "a_pred_0.png") > 0, expected[0])


def test_a_job_cleans_up_only_what_dead_processes_of_this_machine_left(tmp_path):
    """Two shards writing one folder: one's start must not delete the other's temporary files."""
    from segfix.data.files import HOST

    preds, offs, out = tmp_path / "preds", tmp_path / "offs", tmp_path / "out"
    for folder in (preds, offs, out):
        folder.mkdir()
    Image.fromarray(_labels(0)).save(preds / "a.png")
    formats.write_offsets(offs / "a.npz", _offsets(0))
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = out / f".segfix-tmp-{running.pid}@{HOST}.a.xyz.partial.png"
        dead = out / f".segfix-tmp-{_dead_pid()}@{HOST}.a.xyz.partial.png"
        elsewhere = out / f".segfix-tmp-{running.pid}@another-host.a.xyz.partial.png"
        old_style = out / ".segfix-tmp-a.abc.partial.png"  # a user's file, or an older version's: not ours to judge
        for path in (alive, dead, elsewhere, old_style):
            path.write_bytes(b"half a png")
        assert main(["refine", str(preds), "--offsets", str(offs), "--output", str(out)]) == 0
        assert alive.exists() and elsewhere.exists() and old_style.exists()
        assert not dead.exists()
    finally:
        running.kill()
        running.wait()


def test_equal_names_in_subfolders_take_their_own_partners(tmp_path):
    preds, offs, out = tmp_path / "preds", tmp_path / "offs", tmp_path / "out"
    labels = _labels(3)
    for k, seq in enumerate(("seq1", "seq2")):
        (preds / seq).mkdir(parents=True)
        (offs / seq).mkdir(parents=True)
        Image.fromarray(labels).save(preds / seq / "0001.png")
        formats.write_offsets(offs / seq / "0001.npz", _offsets(k))
    assert main(["refine", str(preds), "--offsets", str(offs), "--output", str(out)]) == 0
    for k, seq in enumerate(("seq1", "seq2")):
        expected = segfix.refine_semantic(labels, _offsets(k))
        np.testing.assert_array_equal(read_label(out / seq / "0001.png"), expected)
    assert not np.array_equal(read_label(out / "seq1" / "0001.png"), read_label(out / "seq2" / "0001.png"))


def test_a_partner_that_cannot_be_told_is_an_error_not_a_guess(tmp_path, capsys):
    """Two predictions of one name in two subfolders, one offsets file of that name: which one is it for?"""
    preds, offs, out = tmp_path / "preds", tmp_path / "offs", tmp_path / "out"
    for seq in ("seq1", "seq2"):
        (preds / seq).mkdir(parents=True)
        Image.fromarray(_labels(1)).save(preds / seq / "0001.png")
    offs.mkdir()
    formats.write_offsets(offs / "0001.npz", _offsets(0))
    assert main(["refine", str(preds), "--offsets", str(offs), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("cannot be told") == 2 and not list(out.rglob("*.png"))
    # Predictions laid out in subfolders, offsets in one folder: each name unique, so each finds its own.
    for seq, name in (("seq1", "0001"), ("seq2", "0002")):
        (preds / seq / "0001.png").rename(preds / seq / f"{name}.png")
        formats.write_offsets(offs / f"{name}.npz", _offsets(int(name)))
    assert main(["refine", str(preds), "--offsets", str(offs), "--output", str(tmp_path / "out2")]) == 0
    expected = segfix.refine_semantic(_labels(1), _offsets(2))
    np.testing.assert_array_equal(read_label(tmp_path / "out2" / "seq2" / "0002.png"), expected)


@pytest.fixture(scope="module")
def tiny_model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    segfix.SegFix(**TINY).save_pretrained(folder)
    return folder


def test_two_images_of_one_name_are_refused_not_merged(tmp_path, tiny_model_folder, capsys):
    images = tmp_path / "images"
    images.mkdir()
    image = np.full((20, 24, 3), 90, np.uint8)
    Image.fromarray(image).save(images / "a.png")
    Image.fromarray(image).save(images / "a.jpg")
    Image.fromarray(image).save(images / "b.png")
    code = main(["offsets", str(images), "--model", str(tiny_model_folder), "--output", str(tmp_path / "offs")])
    assert code == 1
    err = capsys.readouterr().err
    assert "a.jpg, a.png would all be written to" in err
    assert sorted(p.name for p in (tmp_path / "offs").glob("*.npz")) == ["b.npz"]
    preds = tmp_path / "preds"
    preds.mkdir()
    Image.fromarray(_labels(0)).save(preds / "a.png")
    args = ["refine", str(preds), "--images", str(images), "--model", str(tiny_model_folder)]
    assert main([*args, "--output", str(tmp_path / "out")]) == 1
    assert "a.jpg, a.png" in capsys.readouterr().err and not (tmp_path / "out" / "a.png").exists()


def test_odd_names_links_and_upper_case_suffixes(tmp_path, capsys):
    """A line break and a non-UTF-8 byte in names, a linked subfolder, ``*.PNG``: each refined and reported
    right, and a second run finds each one done."""
    preds, offs, out, elsewhere = (tmp_path / n for n in ("preds", "offs", "out", "elsewhere"))
    for folder in (preds, offs, elsewhere):
        folder.mkdir()
    (preds / "linked").symlink_to(elsewhere, target_is_directory=True)
    (offs / "linked").mkdir()
    odd = os.fsdecode(b"line\nbreak \xff")
    cases = {Path(odd + ".png"): 0, Path("UPPER.PNG"): 1, Path("linked") / "x.png": 2}
    for name, seed in cases.items():
        Image.fromarray(_labels(seed)).save(preds / name, format="PNG")
        formats.write_offsets((offs / name).with_suffix(".npz"), _offsets(seed))
    assert main(["refine", str(preds), "--offsets", str(offs), "--output", str(out)]) == 0
    for name, seed in cases.items():
        np.testing.assert_array_equal(read_label(out / name), segfix.refine_semantic(_labels(seed), _offsets(seed)))
    capsys.readouterr()
    assert main(["refine", str(preds), "--offsets", str(offs), "--output", str(out)]) == 0
    assert "0 written, 3 already done, 0 failed" in capsys.readouterr().out
    ledger = (out / ".segfix-refine.done").read_text().splitlines()
    assert sorted(json.loads(line) for line in ledger) == sorted(str(name) for name in cases)


def test_a_link_in_the_output_that_leads_out_is_never_written_through(tmp_path, capsys):
    preds, offs, out, mine = (tmp_path / n for n in ("preds", "offs", "out", "mine"))
    for folder in (preds / "sub", offs / "sub", out, mine):
        folder.mkdir(parents=True)
    Image.fromarray(_labels(0)).save(preds / "sub" / "a.png")
    formats.write_offsets(offs / "sub" / "a.npz", _offsets(0))
    (out / "sub").symlink_to(mine, target_is_directory=True)  # the user's own link in the output
    from segfix.data.files import HOST

    (mine / f".segfix-tmp-{_dead_pid()}@{HOST}.a.q.partial.png").write_bytes(b"the user's")
    before = _hashes(tmp_path, skip=None)
    assert main(["refine", str(preds), "--offsets", str(offs), "--output", str(out)]) == 1
    assert "through a link" in capsys.readouterr().err
    assert _hashes(tmp_path) == {**before, **_hashes(out)}  # nothing written through it, nothing removed


# ------------------------------------------------------------------------------------- the file-system property


class _Killed(BaseException):
    """Stands for a kill: not an Exception, so no per-file handler takes it."""


def _random_tree(root: Path, rng: np.random.Generator) -> tuple[Path, Path, Path, dict[Path, int]]:
    """Predictions and offsets in one random layout; returns (preds, offsets, output, relative name -> seed)."""
    preds, offs, out, linked = root / "preds", root / "offs", root / "out", root / "linked-target"
    for folder in (preds, offs, linked):
        folder.mkdir()
    (preds / "link").symlink_to(linked, target_is_directory=True)
    names = ["0001", "0002", "a b", "é", os.fsdecode(b"bad\xfe"), "nl\nname", "UP"]
    folders = [Path("."), Path("seq1"), Path("seq2"), Path("seq1/deep"), Path("link")]
    cases: dict[Path, int] = {}
    for k in range(int(rng.integers(5, 10))):
        suffix = ".PNG" if rng.random() < 0.2 else ".png"
        relative = folders[rng.integers(len(folders))] / (names[rng.integers(len(names))] + suffix)
        if relative.with_suffix(".png") in {c.with_suffix(".png") for c in cases}:
            continue
        (preds / relative).parent.mkdir(parents=True, exist_ok=True)
        (offs / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_labels(k)).save(preds / relative, format="PNG")
        formats.write_offsets((offs / relative).with_suffix(".npz"), _offsets(k))
        cases[relative] = k
    out.mkdir()
    kept = list(cases)[int(rng.integers(len(cases)))]
    (out / kept).parent.mkdir(parents=True, exist_ok=True)
    (out / kept).write_bytes(b"a file the user keeps in the output")
    (out / "notes.txt").write_text("the user's")
    if rng.random() < 0.5:
        (out / "seq2").mkdir(exist_ok=True)
        (out / "seq2" / "trap").symlink_to(preds, target_is_directory=True)  # a link back into the inputs
    return preds, offs, out, cases


@pytest.mark.parametrize("seed", range(6))
def test_random_trees_interrupted_and_run_again(tmp_path, monkeypatch, seed):
    import segfix.data.files as io

    rng = np.random.default_rng(seed)
    preds, offs, out, cases = _random_tree(tmp_path, rng)
    kept = _hashes(out)
    inputs = _hashes(tmp_path, skip=out)
    real_write, calls, kill_at = io.atomic_write, [0], int(rng.integers(1, len(cases)))

    def dying(path, write):
        if Path(path).name.startswith(".segfix-source-"):  # the job's source record, written before any output
            return real_write(path, write)
        calls[0] += 1
        if calls[0] == kill_at:  # killed after the temp file is written, before it is renamed: a leftover
            leftover = Path(path).with_name(f".segfix-tmp-{_dead_pid()}@{io.HOST}.{Path(path).stem}.x.partial")
            leftover.write_bytes(b"half")
            raise _Killed
        return real_write(path, write)

    monkeypatch.setattr(io, "atomic_write", dying)
    with pytest.raises(_Killed):
        refine_folder(preds, out, offsets_dir=offs, batch_size=1, workers=1)
    monkeypatch.setattr(io, "atomic_write", real_write)
    report = refine_folder(preds, out, offsets_dir=offs, batch_size=1, workers=1)
    assert _hashes(tmp_path, skip=out) == inputs  # every input, and every file beside them, keeps its bytes
    assert {p: h for p, h in _hashes(out).items() if p in kept} == kept  # and every file the user kept there
    for relative, k in cases.items():
        target = out / relative
        if str(target) in kept:
            assert any(name == str(relative) for name, _ in report.failed)
            continue
        np.testing.assert_array_equal(read_label(target), segfix.refine_semantic(_labels(k), _offsets(k)))
    assert not [p for p in _hashes(out) if ".segfix-tmp-" in p]  # the killed run's leftovers are gone
    again = refine_folder(preds, out, offsets_dir=offs, batch_size=1, workers=1)
    assert not again.done and len(again.skipped) == len(cases) - len(kept.keys() & {str(out / c) for c in cases})


def test_auto_thin_classes_are_pooled_over_the_folder(tmp_path):
    """A field whose guard keeps the thin parts of the 'auto' classes takes them from the whole folder in a
    folder job (steadier than one map's), every shard alike."""
    preds, offs = tmp_path / "preds", tmp_path / "offs"
    preds.mkdir(), offs.mkdir()
    a = np.zeros((20, 24), np.uint8)
    a[:, 12:] = 1
    a[:, 5] = 3  # class 3 in map a: a one-pixel line, all of it thin
    b = np.zeros((20, 24), np.uint8)
    b[2:18, 2:20] = 3  # in map b: a thick block, so over the folder class 3 is mostly thick
    offsets = np.zeros((2, 20, 24), np.int8)
    offsets[1, :, 5] = 1  # the line's pixels would take the label on their right
    settings = formats.OffsetSettings(scale=1, thin_guard=1, thin_guard_classes="auto")
    for name, labels in (("a", a), ("b", b)):
        Image.fromarray(labels).save(preds / f"{name}.png")
        formats.write_offsets(offs / f"{name}.npz", offsets, settings)
    assert formats.read_offset_settings(offs / "a.npz").thin_guard_classes == "auto"
    pooled = segfix.thin_classes([a, b], 1)
    alone = segfix.thin_classes([a], 1)
    assert 3 not in pooled and 3 in alone  # the two rules differ on this folder
    for shard in ("0/2", "1/2"):
        assert (
            main(["refine", str(preds), "--offsets", str(offs), "--output", str(tmp_path / "out"), "--shard", shard])
            == 0
        )
    field = formats.read_field(offs / "a.npz", default_scale=2)
    expected = segfix.ops.field.apply_field(dataclasses.replace(field, thin_guard_classes=pooled), a.astype(np.int64))
    np.testing.assert_array_equal(read_label(tmp_path / "out" / "a.png"), expected)
    assert (read_label(tmp_path / "out" / "a.png")[:, 5] == 0).all()  # the line moved: class 3 is not thin here
    per_map = segfix.ops.field.apply_field(field, a.astype(np.int64))  # a single map's own rule keeps it
    assert (per_map[:, 5] == 3).all()


def test_a_finished_folder_is_done_only_for_what_made_it(tmp_path, capsys):
    """Outputs finished by one model or setting are not 'already done' for another: the job records what made
    them and refuses another source, naming what differs, with every file left as it was."""
    images, preds = tmp_path / "images", tmp_path / "preds"
    images.mkdir(), preds.mkdir()
    for i in range(2):
        Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(images / f"f{i}.png")
        Image.fromarray(_labels(i)).save(preds / f"f{i}.png")
    torch.manual_seed(0)
    model = segfix.SegFix(**TINY, decision=dict(boundary_threshold=0.0)).eval()
    out = tmp_path / "out"
    assert refine_folder(preds, out, images_dir=images, model=model).ok
    record = json.loads((out / ".segfix-source-refine.json").read_text())
    assert record["config"]["decision"]["iterations"] == 1 and len(record["weights_sha256"]) == 64
    finished = _hashes(out)
    again = refine_folder(preds, out, images_dir=images, model=model)  # the same job: resumes, nothing to do
    assert len(again.skipped) == 2 and not again.done
    other_weights = segfix.SegFix(**TINY).eval()
    for other, differs in (
        (dict(model=model.with_settings(iterations=3)), r"config \(config.decision.iterations 1 there, 3 now;"),
        (dict(model=other_weights), r"config, weights_sha256 \(.*; weights_sha256 differs;"),
        (dict(model=model, iterations=2), "iterations None there, 2 now"),
    ):
        with pytest.raises(ValueError, match=f"holds outputs made with other .*{differs}.*remove this one to redo"):
            refine_folder(preds, out, images_dir=images, **other)
    offsets = tmp_path / "offsets"
    offsets.mkdir()
    for i in range(2):
        formats.write_offsets(offsets / f"f{i}.npz", _offsets(i))
    code = main(["refine", str(preds), "--offsets", str(offsets), "--output", str(out)])
    assert code == 2 and "holds outputs made with other" in capsys.readouterr().err
    assert _hashes(out) == finished
    assert refine_folder(preds, out, images_dir=images, model=model.with_settings(torch_compile=True)).ok  # same maps
