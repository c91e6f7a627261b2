"""`segfix tune` and the tuning policy: what is searched, what is saved, and that nothing is overwritten."""

from __future__ import annotations

import json
import re

import pytest

import segfix
from helpers import TINY, scene
from segfix.cli import main
from segfix.hub.config import split_config


def assert_one_error_line(capsys, command: str, pattern: str) -> None:
    """A user error as docs/cli.md promises: one line, ``segfix COMMAND: error: ...``, on stderr."""

    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"segfix {command}: error: "), lines
    assert re.search(pattern, lines[0]), lines[0]


def test_tune_writes_a_tuned_model_and_never_overwrites(folders, tmp_path, capsys):

    segfix.SegFix(**TINY).save_pretrained(tmp_path / "model")
    dataset = f"folder={folders / 'images' / '*.png'},{folders / 'gt' / '*.png'},5"
    out = tmp_path / "tuned"
    assert main(["tune", "--model", str(tmp_path / "model"), "--dataset", dataset, "--output", str(out)]) == 0
    chosen = json.loads((out / "settings.json").read_text())["chosen"]
    _, stored = split_config(json.loads((out / "config.json").read_text()))
    as_json = {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, stored.get(k)) for k in chosen)}
    assert as_json == chosen
    assert set(chosen) >= {"direction_vote", "flip_tta", "thin_guard", "thin_guard_classes"}
    tuned = segfix.SegFix.from_pretrained(out)
    assert tuned.settings.decision.direction_vote == chosen["direction_vote"]
    capsys.readouterr()
    assert main(["tune", "--model", str(tmp_path / "model"), "--dataset", dataset, "--output", str(out)]) == 2
    assert_one_error_line(capsys, "tune", "not empty")


def test_tune_searches_only_what_it_is_told_from_the_settings_it_is_given(folders, tmp_path, capsys):

    segfix.SegFix(**TINY).save_pretrained(tmp_path / "model")
    dataset = f"folder={folders / 'images' / '*.png'},{folders / 'gt' / '*.png'},5"
    out = tmp_path / "tuned"
    start = ["min_short_side=0", "boundary_threshold=0.3", "direction_vote=true", "iterations=2", "flip_tta=false"]
    args = ["tune", "--model", str(tmp_path / "model"), "--dataset", dataset, "--output", str(out)]
    assert main([*args, "--set", *start, "--search", "thin_guard", "--thin-guard", "0", "1"]) == 0
    settings = json.loads((out / "settings.json").read_text())
    rows = settings["candidates"]
    assert {r["thin_guard"] for r in rows} == {0, 1}  # only the guard was searched
    for row in [*rows, settings["chosen"]]:  # every other setting stays where --set put it
        assert (row["boundary_threshold"], row["direction_vote"], row["iterations"]) == (0.3, True, 2)
        assert (row["semantic_scale"], row["flip_tta"], row["min_short_side"]) == (2, False, 0)
    tuned = segfix.SegFix.from_pretrained(out)
    assert (
        tuned.settings.decision.boundary_threshold,
        tuned.settings.decision.direction_vote,
        tuned.settings.decision.iterations,
    ) == (0.3, True, 2)
    capsys.readouterr()
    assert main([*args[:-1], str(tmp_path / "other"), "--set", "threshold=0.3"]) == 2
    assert_one_error_line(capsys, "tune", r"--set: expected settings among .*, got \['threshold'\]")
    assert main([*args[:-1], str(tmp_path / "other"), "--set", "boundary_threshold=2"]) == 2
    assert_one_error_line(capsys, "tune", "--set: boundary_threshold: expected a probability")
    assert main([*args[:-1], str(tmp_path / "other"), "--max-edge-distance", "0", "17"]) == 2
    assert_one_error_line(capsys, "tune", "--max-edge-distance: expected values up to 16, got 17")
    limits = tmp_path / "limits"
    searched = ["--search", "max_edge_distance", "--max-edge-distance", "0", "2"]
    assert main([*args[:-1], str(limits), "--set", *start, "thin_guard=0", *searched]) == 0
    rows = json.loads((limits / "settings.json").read_text())["candidates"]
    assert sorted({r["max_edge_distance"] for r in rows}) == [0, 2] and {r["thin_guard"] for r in rows} == {0}
    with pytest.raises(SystemExit):
        main([*args[:-1], str(tmp_path / "other"), "--search", "thresholds"])
    assert "invalid choice: 'thresholds'" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_tune_on_a_real_networks_predictions(folders, tmp_path, capsys):

    from segfix.metrics import SegmentationMetrics
    from segfix.training.tuning import TUNED_KEYS

    segfix.SegFix(**TINY).save_pretrained(tmp_path / "model")
    dataset = f"folder={folders / 'images' / '*.png'},{folders / 'gt' / '*.png'},5"
    out = tmp_path / "tuned"
    args = ["tune", "--model", str(tmp_path / "model"), "--dataset", dataset, "--coarse", str(folders / "preds")]
    assert main([*args, "--output", str(out)]) == 0
    assert f"the predictions in {folders / 'preds'}" in capsys.readouterr().out
    rows = json.loads((out / "settings.json").read_text())["candidates"]
    row = rows[0]
    settings = {k: row[k] for k in TUNED_KEYS}
    model = segfix.SegFix.from_pretrained(tmp_path / "model", **settings)
    before, after = (SegmentationMetrics(5, tolerances=(1,), boundary_iou_dilation=None) for _ in range(2))
    for i in range(3):  # the gain is that of refining the given predictions, not stand-ins
        image, truth, coarse = scene(i)
        before.update(coarse, truth)
        after.update(model.refine(image, coarse), truth)
    assert row["miou_gain"] == pytest.approx((after.compute().miou - before.compute().miou) * 100, abs=1e-9)
    assert row["gains"] == {str(folders / "preds"): pytest.approx(row["miou_gain"], abs=1e-12)}
    (folders / "preds" / "img1.png").unlink()
    capsys.readouterr()
    assert main([*args, "--output", str(tmp_path / "again")]) == 2
    assert_one_error_line(capsys, "tune", "lacks 1 images' predictions")


def test_tune_without_flips_saves_the_pixel_budget_it_chose_at(folders, tmp_path):

    from segfix.training.tuning import pixel_budget

    segfix.SegFix(**TINY).save_pretrained(tmp_path / "model")
    dataset = f"folder={folders / 'images' / '*.png'},{folders / 'gt' / '*.png'},5"
    out = tmp_path / "tuned"
    args = ["tune", "--model", str(tmp_path / "model"), "--dataset", dataset, "--coarse", str(folders / "preds")]
    assert main([*args, "--flip", "off", "--output", str(out)]) == 0
    saved = json.loads((out / "settings.json").read_text())
    assert {row["flip_tta"] for row in saved["candidates"]} == {False}
    tuned = segfix.SegFix.from_pretrained(out)
    sizes = [scene(i)[0].shape[:2] for i in range(3)]
    assert not tuned.settings.inference.flip_tta
    assert tuned.settings.preprocessing.max_network_pixels == pixel_budget(sizes, saved["chosen"]["min_short_side"]) > 0
