"""Promise: a bad value is refused, not swapped for another, with one line that names what was expected and what
arrived (docs/security.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segfix
from helpers import TINY, image_and_labels, read_label, voronoi_labels
from segfix.cli import main
from segfix.jobs import formats


def _run_cli(args, capsys):
    capsys.readouterr()
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(iterations=-2), "iterations"),
        (dict(iterations=0), "iterations"),
        (dict(scale=0), "scale"),
        (dict(scale=float("nan")), "scale"),
        (dict(scale=float("inf")), "scale"),
        (dict(scale=1.5), "scale"),
    ],
)
def test_refine_refuses_bad_steps(tiny_vote_model, kwargs, name):
    image, labels = image_and_labels()
    with pytest.raises(ValueError, match=name):
        tiny_vote_model.refine(image, labels, **kwargs)
    argmax = segfix.SegFix(**TINY).eval()
    with pytest.raises(ValueError, match=name):
        argmax.refine(image, labels, **kwargs)


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_cli_refuses_bad_scale_iterations_and_batch_size(tmp_path, capsys, value):
    for flag in ("--scale", "--iterations", "--batch-size"):
        with pytest.raises(SystemExit) as exit_info:
            main(["refine", str(tmp_path), "--offsets", str(tmp_path), "--output", str(tmp_path / "o"), flag, value])
        assert exit_info.value.code == 2
        assert flag in capsys.readouterr().err


def test_image_errors_name_what_arrived(tiny_vote_model):
    _, labels = image_and_labels()
    cases = [
        (np.zeros((0, 40, 48, 3), np.uint8), "at least one image"),
        (torch.zeros(3, 0, 0), "at least one image"),
        (torch.zeros(40, 48, 3), r"shape=\(40, 48, 3\).*permute"),
    ]
    for image, message in cases:
        with pytest.raises(ValueError, match=message):
            tiny_vote_model.refine(image, labels)


def test_from_pretrained_refuses_none_and_suggests_names():
    with pytest.raises(TypeError, match="pretrained_model_name_or_path"):
        segfix.SegFix.from_pretrained(None)
    with pytest.raises(segfix.ModelLoadError, match="did you mean 'camvid-lite0-v[4-7]'"):
        segfix.SegFix.from_pretrained("camvid-lite")


def test_cli_missing_inputs_fail_with_one_line(tmp_path, capsys):
    real = tmp_path / "real"
    real.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(real / "a.png")
    cases = [
        ["refine", str(tmp_path / "prdes"), "--offsets", str(real), "--output", str(tmp_path / "o1")],
        ["refine", str(real), "--offsets", str(tmp_path / "nope"), "--output", str(tmp_path / "o2")],
        ["refine", str(real), "--model", "camvid-lite0-v5", "--output", str(tmp_path / "o3")],  # no --images
        ["refine", str(real), "--model", "camvid-lite0-v5", "--images", str(real), "--output", str(real / "x")],
        ["eval", str(real), str(tmp_path / "missing_gt"), "--num-classes", "3"],
        ["stats", str(tmp_path / "missing_gt"), "--num-classes", "3"],
        ["offsets", str(tmp_path / "missing"), "--model", "camvid-lite0-v5", "--output", str(tmp_path / "o4")],
        ["refine", str(tmp_path / "empty"), "--offsets", str(real), "--output", str(tmp_path / "o5")],
    ]
    (tmp_path / "empty").mkdir()
    for args in cases:
        code, err = _run_cli(args, capsys)
        assert code == 2, args
        assert len(err) == 1 and err[0].startswith(f"segfix {args[0]}: error:"), (args, err)
    code, err = _run_cli(["-v", *cases[0]], capsys)
    assert code == 2 and any("Traceback" in line for line in err)


def test_cli_device_without_a_gpu(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, err = _run_cli(["demo", "--output", str(tmp_path / "d"), "--device", "cuda"], capsys)
    assert code == 2 and "no CUDA GPU" in err[0]


def test_cli_tolerances_must_be_finite(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(tmp_path), str(tmp_path), "--num-classes", "2", "--tolerances", "inf"])
    assert exit_info.value.code == 2 and "--tolerances" in capsys.readouterr().err


def test_cli_eval_names_the_file_whose_size_differs(tmp_path, capsys):
    for sub in ("p", "g"):
        (tmp_path / sub).mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "p" / "a.png")
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(tmp_path / "g" / "a.png")
    code, err = _run_cli(["eval", str(tmp_path / "p"), str(tmp_path / "g"), "--num-classes", "2"], capsys)
    assert code == 2 and "a.png" in err[0] and "size" in err[0]


def test_cli_reports_dangling_links_and_folders_named_like_files(tmp_path, capsys):
    preds, offs = tmp_path / "preds", tmp_path / "offs"
    preds.mkdir()
    offs.mkdir()
    labels = voronoi_labels((20, 24), 4, 3, seed=7)
    Image.fromarray(labels).save(preds / "a.png")
    formats.write_offsets(offs / "a.npz", segfix.boundary_targets(labels, min_pixels=0).offsets())
    (preds / "gone.png").symlink_to(tmp_path / "deleted.png")
    (preds / "loop").symlink_to(preds)  # a linked folder that leads back: read once, reported
    (preds / "folder.png").mkdir()  # a folder named like a file is a subfolder like any other
    code = main(["refine", str(preds), "--offsets", str(offs), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert "gone.png" in err and "broken link" in err and "loop" in err and "read already" in err
    np.testing.assert_array_equal(
        read_label(tmp_path / "out" / "a.png"),
        segfix.refine_semantic(labels, segfix.boundary_targets(labels, min_pixels=0).offsets()),
    )


def test_coco_files_without_their_keys_get_clear_errors(tmp_path, capsys):
    offs = tmp_path / "offs"
    offs.mkdir()
    formats.write_offsets(offs / "7.npz", np.zeros((2, 4, 5), np.int8))
    results = tmp_path / "res" / "results.json"
    results.parent.mkdir()
    base = ["refine", str(results), "--kind", "coco", "--offsets", str(offs)]
    for content, expected in (
        ('[{"category_id": 1, "segmentation": {}}]', "record 0 needs 'image_id' and 'segmentation'"),
        ("{not json", "results.json: not valid JSON (COCO results)"),
    ):
        results.write_text(content)
        assert main([*base, "--output", str(tmp_path / "out")]) == 2
        assert expected in capsys.readouterr().err
    rle = formats.rle_encode(np.zeros((4, 5), bool))
    results.write_text(json.dumps([{"image_id": 7, "category_id": 1, "segmentation": rle, "score": 0.5}]))
    images = tmp_path / "instances.json"
    images.write_text(json.dumps({"images": [{"file_name": "7.jpg"}]}))
    assert main([*base, "--coco-images", str(images), "--output", str(tmp_path / "out")]) == 2
    assert "images[0] needs an 'id' and a 'file_name'" in capsys.readouterr().err


def test_broken_model_cards_do_not_stop_a_model(tmp_path, caplog):
    model = tmp_path / "m"
    segfix.SegFix(**TINY).save_pretrained(model)
    for card in (b"\xff\xfe not utf-8", b"---\nlicense: [unclosed\n---\n# card\n"):
        (model / "README.md").write_bytes(card)
        loaded = segfix.SegFix.from_pretrained(model)
        assert "not a readable model card" in caplog.text
        loaded.save_pretrained(tmp_path / "again")  # and saving it again works
        assert segfix.SegFix.from_pretrained(tmp_path / "again") is not loaded
        caplog.clear()


def test_odd_offsets_files_and_arguments_get_clear_errors(tmp_path):
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(ValueError, match=r"text.npz: not an .npz archive of arrays"):
        formats.read_field(tmp_path / "text.npz", default_scale=2)
    np.savez(tmp_path / "scale.npz", offsets=np.zeros((2, 3, 4), np.int8), scale=np.array([2, 3, 4]))
    with pytest.raises(ValueError, match=r"expected 'scale' to hold one value, got int64 of shape \(3,\)"):
        formats.read_field(tmp_path / "scale.npz", default_scale=2)
    masks, offsets = np.ones((2, 3, 4), bool), np.zeros((2, 3, 4), np.int8)
    with pytest.raises(TypeError, match=r"^scores: expected 2 numbers \(one per mask\), got 'abcd'"):
        segfix.refine_instances(masks, offsets, scores="abcd", resolve_overlaps=True)
    with pytest.raises(ValueError, match="^scores: expected finite numbers"):
        segfix.refine_instances(masks, offsets, scores=[1.0, float("nan")], resolve_overlaps=True)
    with pytest.raises(ValueError, match="^label_map: expected a tensor that holds values"):
        segfix.refine_semantic(torch.zeros((3, 4), dtype=torch.int64, device="meta"), offsets[0:2, :, :])


def test_compile_in_place_and_half_weights_on_the_cpu_warn(tiny_vote_model):
    """model.compile() compiles what refine runs (torch.compile(model) would compile forward alone); float16
    weights on the CPU, emulated and very slow there, say so."""
    model = tiny_vote_model.with_settings()
    model.compile()
    assert model.settings.inference.torch_compile and not tiny_vote_model.settings.inference.torch_compile
    assert model.settings == tiny_vote_model.settings.replace(torch_compile=True)
    with pytest.raises(TypeError, match="compile: takes no arguments"):
        model.compile(mode="max-autotune")
    # The warning is given once per process: a fresh one shows it whatever ran before.
    code = (
        "import warnings, numpy as np, segfix\n"
        "from helpers import TINY\n"
        "half = segfix.SegFix(**TINY).half().eval()\n"
        "labels = np.zeros((16, 16), np.uint8); labels[:, 8:] = 1\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    half.refine(np.zeros((16, 16, 3), np.uint8), labels)\n"
        "print([str(w.message) for w in caught])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert re.search(r"float16 on the CPU.*model\.float\(\)", out), out
