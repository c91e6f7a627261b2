"""Each command end to end, as a user runs it: refine, offsets, eval, stats, demo, train, models."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import segfix
from helpers import TINY, read_label, scene, voronoi_labels
from segfix.cli import main
from segfix.jobs import formats


def test_refine_with_offsets_then_eval(folders, capsys):
    out = folders / "refined"
    assert main(["refine", str(folders / "preds"), "--offsets", str(folders / "offsets"), "--output", str(out)]) == 0
    for i in range(3):
        _, truth, coarse = scene(i)
        expected = segfix.refine_semantic(coarse, segfix.boundary_targets(truth, min_pixels=0).offsets())
        np.testing.assert_array_equal(read_label(out / f"img{i}.png"), expected)
    capsys.readouterr()
    code = main(
        [
            "eval",
            str(folders / "preds"),
            str(folders / "gt"),
            "--num-classes",
            "5",
            "--compare",
            str(out),
            "--json",
            str(folders / "scores.json"),
            "--csv",
            str(folders / "scores.csv"),
            "--markdown",
            str(folders / "scores.md"),
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    # The terminal gets aligned columns; the --markdown file the Markdown table.
    assert "IoU before" in table and "| " not in table and re.search(r"^mean +\d", table, re.M)
    assert "| **mean** |" in (folders / "scores.md").read_text()
    scores = json.loads((folders / "scores.json").read_text())
    before, after = scores[str(folders / "preds")], scores[str(out)]
    assert after["mean"]["IoU"] > before["mean"]["IoU"] and after["mean"]["F@1px"] > before["mean"]["F@1px"]
    assert (folders / "scores.csv").read_text().startswith("predictions,class,IoU")


def test_refine_with_a_model_resumes_and_reports_bad_files(folders, tmp_path, capsys):
    model_dir = tmp_path / "model"
    segfix.SegFix(**TINY).save_pretrained(model_dir)
    out = folders / "refined"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folders / "preds" / "img9.png")  # no such image
    (folders / "preds" / "broken.png").write_bytes(b"not a png")
    args = [
        "refine",
        str(folders / "preds"),
        "--model",
        str(model_dir),
        "--images",
        str(folders / "images"),
        "--output",
        str(out),
        "--save-viz",
        "--batch-size",
        "2",
    ]
    assert main(args) == 1  # two inputs could not be processed
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == ["img0.png", "img1.png", "img2.png"]
    assert (out / "viz" / "img0.png").is_file()
    mtime = (out / "img0.png").stat().st_mtime_ns
    (out / "img1.png").unlink()  # as if killed before writing it
    assert main(args) == 1
    assert (out / "img0.png").stat().st_mtime_ns == mtime  # finished outputs are not redone
    assert (out / "img1.png").is_file()
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert hidden == [".segfix-refine.done", ".segfix-source-refine.json"]  # no temp files: the ledger, the source
    inside = ["refine", str(folders / "preds"), "--offsets", str(folders / "offsets"), "--output"]
    capsys.readouterr()
    assert main([*inside, str(folders / "preds" / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "inside the input folder" in error[0] and "Traceback" not in error[0]


def test_killed_refine_leaves_no_half_written_file(folders):
    """Kill a refine process mid-run, re-run, and check every output."""
    out = folders / "refined"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    code = (
        "import sys, segfix.data.files as io, os\n"
        "real = io.atomic_write\n"
        "count = {'n': 0}\n"
        "def dying(path, write):\n"
        "    count['n'] += 1\n"
        "    if count['n'] == 3:\n"  # the first write is the job's source record, the second img0
        "        def half(tmp):\n"
        "            write(tmp); os._exit(9)\n"
        "        return real(path, half)\n"
        "    return real(path, write)\n"
        "io.atomic_write = dying\n"
        "import segfix.jobs.formats as f; f.write_png = lambda p, a: io.atomic_write(p, lambda t: "
        "__import__('PIL.Image', fromlist=['x']).fromarray(a).save(t, format='PNG'))\n"
        "from segfix.cli import main\n"
        f"main(['refine', {str(folders / 'preds')!r}, '--offsets', {str(folders / 'offsets')!r}, '--output', "
        f"{str(out)!r}, '--batch-size', '1'])\n"
    )
    killed = subprocess.run([sys.executable, "-c", code], env=env)
    assert killed.returncode == 9
    assert [p.name for p in out.glob("[!.]*.png")] == ["img0.png"]  # the second file was never renamed into place
    assert len(list(out.glob(".segfix-tmp-*.partial*"))) == 1  # only its temp file is left
    assert main(["refine", str(folders / "preds"), "--offsets", str(folders / "offsets"), "--output", str(out)]) == 0
    for i in range(3):
        _, truth, coarse = scene(i)
        expected = segfix.refine_semantic(coarse, segfix.boundary_targets(truth, min_pixels=0).offsets())
        np.testing.assert_array_equal(read_label(out / f"img{i}.png"), expected)
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert hidden == [".segfix-refine.done", ".segfix-source-refine.json"]


def test_offsets_command_both_formats(folders, tmp_path):
    model_dir = tmp_path / "model"
    model = segfix.SegFix(**TINY)
    model.save_pretrained(model_dir)
    for fmt in ("npz", "mat"):
        out = tmp_path / f"off_{fmt}"
        assert (
            main(["offsets", str(folders / "images"), "--model", str(model_dir), "--output", str(out), "--format", fmt])
            == 0
        )
        image = np.array(Image.open(folders / "images" / "img1.png"))
        np.testing.assert_array_equal(
            formats.read_offsets(out / f"img1.{fmt}"), segfix.SegFix.from_pretrained(model_dir).predict_offsets(image)
        )
    # .mat offsets written by the command feed refine, as the original's released files do.
    assert (
        main(
            ["refine", str(folders / "preds"), "--offsets", str(tmp_path / "off_mat"), "--output", str(tmp_path / "r")]
        )
        == 0
    )


def test_instances_cityscapes_and_coco(folders, tmp_path):
    preds = tmp_path / "inst"
    preds.mkdir()
    _, truth, _ = scene(0)
    masks = np.stack([truth == 1, truth == 2])
    for k, m in enumerate(masks):
        Image.fromarray(m.astype(np.uint8) * 255).save(preds / f"img0_{k}.png")
    (preds / "img0_pred.txt").write_text("img0_0.png 26 0.9\nimg0_1.png 24 0.8\n")
    out = tmp_path / "inst_out"
    assert (
        main(
            [
                "refine",
                str(preds),
                "--kind",
                "cityscapes-instance",
                "--offsets",
                str(folders / "offsets"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    offsets = formats.read_offsets(folders / "offsets" / "img0.mat")
    expected = segfix.refine_instances(masks, offsets)
    got = formats.read_cityscapes_instances(out / "img0_pred.txt")
    np.testing.assert_array_equal(got.masks, expected)
    assert got.classes == [26, 24]

    records = [
        {"image_id": "img0", "category_id": 3, "score": 0.7, "segmentation": formats.rle_encode(m)} for m in masks
    ]
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "results.json").write_text(json.dumps(records))
    assert (
        main(
            [
                "refine",
                str(tmp_path / "coco" / "results.json"),
                "--kind",
                "coco",
                "--offsets",
                str(folders / "offsets"),
                "--output",
                str(tmp_path / "coco_out"),
            ]
        )
        == 0
    )
    refined = json.loads((tmp_path / "coco_out" / "results.json").read_text())
    for record, mask in zip(refined, expected):
        np.testing.assert_array_equal(formats.rle_decode(record["segmentation"]), mask)
        assert record["score"] == 0.7


def test_reports_never_land_in_a_folder_they_score(folders, capsys):
    """--json/--csv/--markdown inside the predictions, the ground truth or --compare: refused before reading, and
    every input file is left as it was."""
    before = {p: p.read_bytes() for p in folders.rglob("*.png")}
    for folder in ("preds", "gt", "offsets"):
        for flag in ("--json", "--csv", "--markdown"):
            target = folders / folder / "img0.png"
            args = ["eval", str(folders / "preds"), str(folders / "gt"), "--num-classes", "5"]
            code = main([*args, "--compare", str(folders / "offsets"), flag, str(target)])
            assert code == 2 and "lies inside the input folder" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in folders.rglob("*.png")} == before
    report = folders / "report.json"
    assert main(["eval", str(folders / "preds"), str(folders / "gt"), "--num-classes", "5", "--json", str(report)]) == 0
    assert "preds" in next(iter(json.loads(report.read_text())))


def test_stats_refuses_labels_beyond_the_classes_as_eval_does(folders, capsys):
    """Labels 0..4 with --num-classes 3: eval refused them while stats dropped them and printed numbers."""
    for command in (["stats", str(folders / "gt")], ["eval", str(folders / "preds"), str(folders / "gt")]):
        assert main([*command, "--num-classes", "3"]) == 2
        assert "target: expected class" in (err := capsys.readouterr().err) and "found 3, 4" in err


def test_trainid_predictions_against_cityscapes_label_ids(tmp_path, capsys):
    """The usual Cityscapes case: trainId predictions, labelId ground truth. --dataset cityscapes names the way
    out; --pred-format trainid scores it right; read as labelIds the predictions are mostly ignore: a warning."""
    from segfix.data.registry import decode_labels

    for sub in ("pred", "gt"):
        (tmp_path / sub).mkdir()
    for i in range(3):
        train_ids = voronoi_labels((32, 48), 8, 19, seed=i).astype(np.int64)
        label_ids = decode_labels(train_ids, np.zeros_like(train_ids, np.uint8), "cityscapes-labelid")
        Image.fromarray(train_ids.astype(np.uint8)).save(tmp_path / "pred" / f"f{i}.png")
        Image.fromarray(label_ids).save(tmp_path / "gt" / f"f{i}.png")
    pred, gt = str(tmp_path / "pred"), str(tmp_path / "gt")
    assert main(["eval", pred, gt, "--dataset", "cityscapes"]) == 2
    assert "use --dataset cityscapes-labelid, with --pred-format trainid" in capsys.readouterr().err
    assert main(["eval", pred, gt, "--dataset", "cityscapes-labelid", "--pred-format", "trainid", "--json",
                 str(tmp_path / "right.json")]) == 0  # fmt: skip
    right = json.loads((tmp_path / "right.json").read_text())
    assert next(iter(right.values()))["pixel_accuracy"] == pytest.approx(100.0)
    capsys.readouterr()
    with pytest.warns(UserWarning, match="decode to mostly ignore as 'cityscapes-labelid'"):
        main(["eval", pred, gt, "--dataset", "cityscapes-labelid"])


def test_demo(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path)]) == 0
    assert (tmp_path / "demo.png").is_file() and (tmp_path / "refined.png").is_file()
    out = capsys.readouterr().out
    assert "mIoU" in out
    # The README's caption quotes this run: the recommended model, its pixel count and its scores.
    import re
    from pathlib import Path

    rows = {line[:32].strip(): line[32:].split() for line in out.splitlines()[2:5]}
    coarse, refined, oracle = rows.values()
    model = segfix.list_models()[0]
    caption = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    expected = (
        f"`{model}` changes {refined[4]} pixels, mostly along the cup's and saucer's edges: mIoU {coarse[0]} -> "
        f"{refined[0]}, boundary F@1px {coarse[1]} -> {refined[1]}. Offsets from the reference (the oracle, SegFix's "
        f"upper bound) would give {oracle[0]} / {oracle[1]}."
    )
    assert expected in caption, re.findall(r"on this coffee cup.{0,300}", caption)


def test_refine_reports_mis_sized_and_colour_predictions(folders):
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(folders / "preds" / "img1.png")  # wrong size
    Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(folders / "preds" / "img2.png")  # colour, not ids
    out = folders / "refined"
    assert main(["refine", str(folders / "preds"), "--offsets", str(folders / "offsets"), "--output", str(out)]) == 1
    assert [p.name for p in out.glob("*.png")] == ["img0.png"]


def test_train_command_with_validation(tmp_path, capsys):
    root = tmp_path / "camvid"
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(4):
            image, truth, _ = scene(i)
            Image.fromarray(image).save(root / split / f"f{i}.png")
            Image.fromarray(truth).save(root / f"{split}annot" / f"f{i}.png")
    code = main(
        [
            "train",
            "--dataset",
            f"camvid={root}",
            "--output",
            str(tmp_path / "run"),
            "--iterations",
            "2",
            "--batch-size",
            "2",
            "--crop-size",
            "32",
            "--workers",
            "0",
            "--holdout",
            "2",
            "--val-dataset",
            f"camvid={root}@val",
        ]
    )
    assert code == 0
    assert (tmp_path / "run" / "history.jsonl").is_file()
    chosen = json.loads((tmp_path / "run" / "settings.json").read_text())["chosen"]
    tuned = segfix.SegFix.from_pretrained(tmp_path / "run" / "model")
    assert chosen and {name: tuned.settings.get(name) for name in chosen} == {
        name: tuple(value) if isinstance(value, list) else value for name, value in chosen.items()
    }  # the saved model carries the settings the held-out search chose


def test_cityscapes_names_share_one_key():
    from segfix.data.files import match_stem

    key = "frankfurt_000000_000294"
    for name in (
        f"{key}_leftImg8bit.png",
        f"{key}_gtFine_labelIds.png",
        f"{key}_leftImg8bit.mat",
        f"{key}_leftImg8bit_pred.txt",
        f"{key}.png",
    ):
        assert match_stem(name) == key


def test_refine_uses_the_models_settings_and_vote(folders, tmp_path):
    model = segfix.SegFix(**TINY).with_settings(direction_vote=True, semantic_scale=1, boundary_threshold=0.3).eval()
    model.save_pretrained(tmp_path / "model")
    out = folders / "refined"
    main(["refine", str(folders / "preds"), "--model", str(tmp_path / "model"), "--images", str(folders / "images"),
          "--output", str(out)])  # fmt: skip
    for i in range(3):
        image, _, coarse = scene(i)
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"img{i}.png")), model.refine(image, coarse))


def test_refine_with_offsets_uses_the_scale_the_files_record(folders, tmp_path):
    model_dir = tmp_path / "model"
    segfix.SegFix(**TINY).with_settings(semantic_scale=1, boundary_threshold=0.0).save_pretrained(model_dir)
    offs = tmp_path / "offs"
    assert main(["offsets", str(folders / "images"), "--model", str(model_dir), "--output", str(offs)]) == 0
    assert formats.read_offset_settings(offs / "img0.npz").scale == 1
    out = tmp_path / "refined"
    assert main(["refine", str(folders / "preds"), "--offsets", str(offs), "--output", str(out)]) == 0
    by_model = tmp_path / "by_model"
    args = ["refine", str(folders / "preds"), "--model", str(model_dir), "--images", str(folders / "images")]
    assert main([*args, "--output", str(by_model)]) == 0
    for i in range(3):
        _, _, coarse = scene(i)
        expected = segfix.refine_semantic(coarse, formats.read_offsets(offs / f"img{i}.npz"), scale=1)
        np.testing.assert_array_equal(read_label(out / f"img{i}.png"), expected)
        np.testing.assert_array_equal(read_label(by_model / f"img{i}.png"), expected)  # both routes agree


def test_a_vote_model_gives_the_same_maps_by_offset_files_and_by_the_model(folders, tmp_path):
    model_dir = tmp_path / "model"
    model = (
        segfix.SegFix(**TINY)
        .with_settings(semantic_scale=1, boundary_threshold=0.2, direction_vote=True, iterations=2)
        .eval()
    )
    model.save_pretrained(model_dir)
    offs = tmp_path / "offs"
    assert main(["offsets", str(folders / "images"), "--model", str(model_dir), "--output", str(offs)]) == 0
    stored = formats.read_offset_settings(offs / "img0.npz")
    assert (stored.direction_vote, stored.scale, stored.iterations) == (True, 1, 2)
    by_files, by_model = tmp_path / "by_files", tmp_path / "by_model"
    assert main(["refine", str(folders / "preds"), "--offsets", str(offs), "--output", str(by_files)]) == 0
    args = ["refine", str(folders / "preds"), "--model", str(model_dir), "--images", str(folders / "images")]
    assert main([*args, "--output", str(by_model)]) == 0
    changed = 0
    for i in range(3):
        image, _, coarse = scene(i)
        # The reference: the vote itself, from the model's own probabilities, two steps at scale 1.
        prediction = model.predict(image, direction_prob=True)
        expected = coarse
        for _ in range(2):
            expected = segfix.vote_labels(expected, prediction.direction_prob, prediction.boundary, scale=1)
        np.testing.assert_array_equal(read_label(by_files / f"img{i}.png"), expected)
        np.testing.assert_array_equal(read_label(by_model / f"img{i}.png"), expected)
        changed += int((expected != coarse).sum())
    assert changed > 0  # the routes agree on maps that the vote really changed


def test_models_lists_the_bundled_models_recommended_first(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == segfix.list_models() and lines[0].endswith("(recommended)")
    assert main(["models", "camvid-lite0-v[45]"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["camvid-lite0-v5", "camvid-lite0-v4"]
    assert segfix.list_models("*-v4") == ["camvid-lite0-v4"]
    assert segfix.list_models(exclude_filters=["*-v5", "*-v6", "*-v7"]) == ["camvid-lite0-v4"]
    assert main(["models", "nothing*"]) == 2
