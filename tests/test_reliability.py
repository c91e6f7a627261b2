"""Every reproducer of the reliability report: each ends in a right result or a clear error.

Each test states the case as a user met it; on the code before the fix each of them failed (a crash deep in
torch or numpy, a silently wrong output, or a lost file).
"""

from __future__ import annotations

import ast
import json
import re
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
from segfix.metrics import SegmentationMetrics

SRC = Path(segfix.__file__).parent


@pytest.fixture(scope="module")
def tiny_vote_model():
    torch.manual_seed(0)
    return segfix.SegFix(**TINY).with_settings(direction_vote=True, boundary_threshold=0.0).eval()


def _image_and_labels(seed: int = 0):
    labels = voronoi_labels((40, 48), 6, 5, seed=seed)
    image = np.stack([labels.astype(np.int64) * 40 % 256] * 3, -1).astype(np.uint8)
    return image, labels


# ---------------------------------------------------------------- data loss


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


# ---------------------------------------------------------------- the bundled model's vote path


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64, np.int16, np.int32])
def test_vote_model_accepts_every_integer_label_dtype(tiny_vote_model, dtype):
    image, labels = _image_and_labels()
    expected = tiny_vote_model.refine(image, labels.astype(np.int64))
    out = tiny_vote_model.refine(image, labels.astype(dtype))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.astype(np.int64), expected)


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64])
def test_wide_unsigned_torch_labels_in_refine_semantic_and_metrics(dtype):
    labels = voronoi_labels((20, 24), 4, 3, seed=4)
    offsets = segfix.boundary_targets(labels, min_pixels=0).offsets()
    expected = segfix.refine_semantic(labels.astype(np.int64), offsets, scale=1)
    out = segfix.refine_semantic(
        torch.from_numpy(labels.astype(np.int64)).to(dtype), torch.from_numpy(offsets), scale=1
    )
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.to(torch.int64).numpy(), expected)
    m = SegmentationMetrics(5)
    m.update(torch.from_numpy(expected).to(dtype), torch.from_numpy(labels.astype(np.int64)).to(dtype))
    assert np.isfinite(m.compute().miou)


def test_a_mirrored_view_refines_like_a_copy(tiny_vote_model):
    image, labels = _image_and_labels(5)
    mirrored_image, mirrored_labels = image[:, ::-1], np.fliplr(labels)
    out = tiny_vote_model.refine(mirrored_image, mirrored_labels)
    np.testing.assert_array_equal(out, tiny_vote_model.refine(mirrored_image.copy(), mirrored_labels.copy()))


# ---------------------------------------------------------------- ignore_index outside the dtype's range


def _wrap_case():
    labels = np.array([[0, 0, 1, 1]], np.uint8)
    offsets = np.zeros((2, 1, 4), np.int8)
    offsets[1, 0, 1], offsets[1, 0, 2] = 1, -1
    return labels, offsets


@pytest.mark.parametrize("ignore", [256, -1, 1000])
def test_an_ignore_index_the_dtype_cannot_hold_ignores_nothing(ignore):
    labels, offsets = _wrap_case()
    expected = segfix.refine_semantic(labels, offsets, scale=1, ignore_index=None)
    np.testing.assert_array_equal(expected, [[0, 1, 0, 1]])
    np.testing.assert_array_equal(segfix.refine_semantic(labels, offsets, scale=1, ignore_index=ignore), expected)
    out = segfix.refine_semantic(torch.from_numpy(labels), torch.from_numpy(offsets), scale=1, ignore_index=ignore)
    np.testing.assert_array_equal(out.numpy(), expected)
    prob = np.zeros((8, 1, 4), np.float32)
    prob[4] = 1.0  # everyone looks right
    moving = np.ones((1, 4), bool)
    plain = segfix.vote_labels(labels, prob, moving, ignore_index=None)
    np.testing.assert_array_equal(segfix.vote_labels(labels, prob, moving, ignore_index=ignore), plain)
    torch_vote = segfix.vote_labels(
        torch.from_numpy(labels), torch.from_numpy(prob), torch.from_numpy(moving), ignore_index=ignore
    )
    np.testing.assert_array_equal(torch_vote.numpy(), plain)


# ---------------------------------------------------------------- metrics


def test_metrics_never_count_the_ignore_label_even_when_it_is_a_class_id():
    m = SegmentationMetrics(2, ignore_index=0)
    m.update(np.array([[0, 1], [1, 1]]), np.array([[0, 0], [1, 1]]))
    r = m.compute()
    assert np.isnan(r.iou[0]) and r.iou[1] == 1.0
    assert r.confusion.sum() == 2  # the two ignore pixels are not counted
    assert np.isnan(r.boundary_f[1][0])


def test_metrics_predicting_the_ignore_class_is_wrong():
    m = SegmentationMetrics(3, ignore_index=0)
    m.update(np.array([[0, 2]]), np.array([[1, 2]]))  # the first pixel predicted as the ignore label
    r = m.compute()
    assert r.iou[1] == 0.0 and r.iou[2] == 1.0 and np.isnan(r.iou[0])


# ---------------------------------------------------------------- flip_direction


def test_flip_direction_on_uint8_and_its_range_check():
    np.testing.assert_array_equal(segfix.flip_direction(np.array([[7, 0]], np.uint8)), [[5, 4]])
    assert segfix.flip_direction(np.array([[7, 0]], np.uint8)).dtype == np.uint8
    with pytest.raises(ValueError, match=r"direction: expected classes in 0\.\.3"):
        segfix.flip_direction(np.array([[7]]), 4)
    with pytest.raises(TypeError, match="direction"):
        segfix.flip_direction(np.array([[1.5]]))


# ---------------------------------------------------------------- bad values are refused, not swapped


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
    image, labels = _image_and_labels()
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


# ---------------------------------------------------------------- overflow


@pytest.mark.parametrize(
    "value, dtype, scale",
    [
        (2**62, np.int64, 2),
        (np.iinfo(np.int64).max, np.int64, 1),
        (np.iinfo(np.int64).min, np.int64, 3),
        (1, np.int64, 2**62),
        (2**64 - 1, np.uint64, 2),
        (2**31 - 1, np.int32, 2**40),
    ],
)
def test_huge_offsets_and_scales_clamp_to_the_border(value, dtype, scale):
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    offsets = np.zeros((2, 3, 4), dtype)
    offsets[1, 1, 1] = value
    # reference in exact Python integers
    expected = labels.copy()
    x = min(max(1 + scale * int(value), 0), 3)
    expected[1, 1] = labels[1, x]
    np.testing.assert_array_equal(segfix.shift_labels(labels, offsets, scale=scale), expected)
    torch_out = segfix.shift_labels(torch.from_numpy(labels), torch.from_numpy(offsets), scale=scale)
    np.testing.assert_array_equal(torch_out.numpy(), expected)


# ---------------------------------------------------------------- clear errors


def test_big_endian_inputs_give_native_results():
    labels = voronoi_labels((20, 24), 4, 3, seed=6)
    offsets = segfix.boundary_targets(labels, min_pixels=0).offsets()
    expected = segfix.shift_labels(labels.astype(np.int32), offsets.astype(np.int16))
    out = segfix.shift_labels(labels.astype(">i4"), offsets.astype(">i2"))
    assert out.dtype == np.dtype(">i4")
    np.testing.assert_array_equal(out, expected)
    targets = segfix.boundary_targets(labels.astype(">i4"), min_pixels=0)
    np.testing.assert_array_equal(targets.offsets(), offsets)


def test_empty_maps():
    empty = torch.zeros((0, 0), dtype=torch.uint8)
    assert segfix.shift_labels(empty, torch.zeros((2, 0, 0), dtype=torch.int8)).shape == (0, 0)
    assert segfix.shift_labels(np.zeros((0, 5), np.uint8), np.zeros((2, 0, 5), np.int8)).shape == (0, 5)
    with pytest.raises(ValueError, match="label: expected a map of at least 1x1"):
        segfix.boundary_targets(np.zeros((0, 0), np.uint8))


def test_image_errors_name_what_arrived(tiny_vote_model):
    _, labels = _image_and_labels()
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
    with pytest.raises(segfix.ModelLoadError, match="did you mean 'camvid-lite0-v[456]'"):
        segfix.SegFix.from_pretrained("camvid-lite")


# ---------------------------------------------------------------- hostile model folders


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "model"
    segfix.SegFix(**TINY).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("decoder_channels", 20000, "decoder_channels: expected an integer in 1..1024"),
        ("head_channels", 10**9, "head_channels"),
        ("iterations", 10**9, "iterations: expected an integer in 1..1024"),
        ("semantic_scale", 10**6, "semantic_scale"),
        ("window_size", 0, "window_size"),
        ("window_size", [10**9, 10**9], "window_size"),
        ("window_stride", 0, "window_stride"),
        ("max_whole_pixels", 10**15, "max_whole_pixels"),
        ("boundary_threshold", float("nan"), "boundary_threshold"),
        ("mean", [float("nan"), 0.5, 0.5], "mean/std: expected 3 finite numbers"),
        ("std", [float("inf"), 0.5, 0.5], "mean/std: expected 3 finite numbers"),
        ("std", [0.5, 0.5, -0.0], "mean/std: expected 3 finite numbers"),
        ("window_stride", [2048, 600], r"window_stride: expected at most the window_size \(1024, 1024\)"),
        ("backbone_kwargs", {"checkpoint_path": "/etc/passwd"}, "read files"),
        ("backbone_kwargs", {"pretrained_cfg_overlay": {"file": "/x"}}, "read files"),
        ("backbone_kwargs", {"cache_dir": "/tmp"}, "read files"),
    ],
)
def test_hostile_config_values_are_refused_before_anything_is_built(model_folder, key, value, message):
    from segfix.model.settings import FLAT_NAMES

    config = json.loads((model_folder / "config.json").read_text())
    group, name = FLAT_NAMES.get(key, ("network", key))
    config[group][name] = value  # where save_pretrained writes it (a second copy at the top level is refused)
    (model_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(segfix.ModelLoadError, match=re.escape(message) if "(" not in message else message):
        segfix.SegFix.from_pretrained(model_folder)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(iterations=3), "iterations: given twice, in decision and at the top level; keep one"),
        (lambda c: c["decision"].update(direction_threshold=0.5), "direction_threshold: the old name of"),
        (lambda c: c.update(direction_threshold=0.5), "direction_threshold: the old name of"),
        (lambda c: c.update(backbone="resnet18"), "backbone: given twice, at the top level and in network"),
    ],
)
def test_a_config_that_gives_a_setting_twice_is_refused(model_folder, change, message):
    """A flat key beside its group's, or a legacy key beside its successor: one value would be dropped silently,
    whichever came later winning."""
    config = json.loads((model_folder / "config.json").read_text())
    change(config)
    (model_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(segfix.ModelLoadError, match=re.escape(message)):
        segfix.SegFix.from_pretrained(model_folder)


def test_window_settings_that_cannot_work_are_refused_before_a_pass():
    """A stride longer than the window leaves pixels unseen; a tiny window every pixel never finishes."""
    model = segfix.SegFix(**TINY)
    with pytest.raises(ValueError, match=r"window_stride: expected at most the window_size \(16, 16\)"):
        model.with_settings(window_size=16, window_stride=(17, 8))
    slow = model.with_settings(inference="sliding", window_size=16, window_stride=1)
    with pytest.raises(ValueError, match=r"takes 228,?\d* network passes|network passes over a 600x400 image"):
        slow.refine(np.zeros((400, 600, 3), np.uint8), np.zeros((400, 600), np.uint8))


def test_nested_or_huge_configs_are_refused(model_folder):
    (model_folder / "config.json").write_text("[" * 30000 + "]" * 30000)
    with pytest.raises(segfix.ModelLoadError, match="config"):
        segfix.SegFix.from_pretrained(model_folder)
    (model_folder / "config.json").write_text(" " * (1 << 17))
    with pytest.raises(segfix.ModelLoadError, match="bytes"):
        segfix.SegFix.from_pretrained(model_folder)


def test_every_torch_load_is_weights_only_and_the_floor_makes_it_default():
    """The threat model's promise that no pickle runs: every torch.load in the package passes
    weights_only=True, and the lowest supported torch (2.6) makes it the default anyway."""
    calls = 0
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load":
                if getattr(node.func.value, "id", None) == "torch":
                    calls += 1
                    kw = {k.arg: k.value for k in node.keywords}
                    assert "weights_only" in kw and kw["weights_only"].value is True, f"{path}:{node.lineno}"
    assert calls >= 3
    pyproject = (SRC.parents[1] / "pyproject.toml").read_text()
    floor = re.search(r'"torch>=(\d+)\.(\d+)', pyproject)
    assert floor and (int(floor[1]), int(floor[2])) >= (2, 6)


# ---------------------------------------------------------------- the CLI on bad input


def _run_cli(args, capsys):
    capsys.readouterr()
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


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


# ------------------------------------------------------------------ issue 26: numbers that are right or refused


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_eval_with_too_few_classes_is_refused_and_extra_predictions_are_named(tmp_path, capsys, caplog):
    labels = np.repeat(np.arange(7, dtype=np.uint8), 4)[None].repeat(6, 0)
    _write(tmp_path / "gt" / "a.png", labels)
    _write(tmp_path / "pred" / "a.png", labels)
    assert main(["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "--num-classes", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segfix eval: error: ")
    assert "expected class ids 0..2 or the ignore label 255, found 3, 4, 5, 6" in err[0]
    _write(tmp_path / "pred" / "extra.png", labels)
    assert main(["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "--num-classes", "7"]) == 0
    assert "1 of 2 predictions have no ground truth" in caplog.text and "extra.png" in caplog.text


@pytest.mark.parametrize(
    "label_format, stored, expected",
    [
        ("ade20k", [[1, 1, 2, 2, 0, 0]], [[1, 2, 2, 2, 0, 0]]),
        ("trainid", [[1, 1, 2, 2, 0, 0]], [[1, 2, 2, 2, 0, 0]]),
        ("cityscapes-labelid", [[7, 7, 8, 8, 0, 0]], [[7, 8, 8, 8, 0, 0]]),
    ],
)
def test_the_ignore_label_is_a_stored_value_and_never_freezes_a_class(tmp_path, label_format, stored, expected):
    """``--ignore-index 0`` names the stored 0; with ADE20K's encoding stored 1 is class 0 (wall), which moves."""
    stored_map = np.array(stored, np.uint8)
    _write(tmp_path / "preds" / "a.png", stored_map)
    offsets = np.zeros((2, 1, 6), np.int8)
    offsets[1, 0, 1] = 1  # pixel 1 takes its right neighbour's label
    offsets[1, 0, 3] = 1  # pixel 3 would take the ignore pixel's label: it never does
    formats.write_offsets(tmp_path / "offs" / "a.npz", offsets)
    args = ["refine", str(tmp_path / "preds"), "--offsets", str(tmp_path / "offs"), "--output", str(tmp_path / "out")]
    assert main([*args, "--label-format", label_format, "--ignore-index", "0", "--scale", "1"]) == 0
    np.testing.assert_array_equal(read_label(tmp_path / "out" / "a.png"), expected)


def test_metric_settings_that_make_no_sense_are_refused():
    from segfix.metrics import BoundaryStatistics

    for dilation in (-1, 0, 1.5, float("nan"), float("inf"), "0.02", True):
        with pytest.raises(ValueError, match="^boundary_iou_dilation: expected a fraction"):
            SegmentationMetrics(3, boundary_iou_dilation=dilation)
    for widths in ((-1, 2), (1, float("nan")), (), (1, float("inf")), "12"):
        with pytest.raises(ValueError, match="^widths: expected a non-empty list of positive, finite"):
            BoundaryStatistics(3, widths=widths)
    for counts in ([2, -1, 5], [3, 3, 1, -1], "zz"):
        with pytest.raises(ValueError, match="RLE counts"):
            formats.rle_decode({"size": [2, 3], "counts": counts})


# ------------------------------------------------------------------------- inputs that were silently wrong


@pytest.mark.parametrize(
    "make, shown",
    [
        (lambda img: img.float(), "[0, 255]"),  # 0..255 floats
        (lambda img: (img.float() / 255 - 0.45) / 0.225, "[-2, 2.444]"),  # ImageNet-normalised
        (lambda img: torch.where(img > 100, float("nan"), img.float() / 255), "nan"),
        (lambda img: torch.where(img > 100, float("inf"), img.float() / 255), "inf"),
    ],
)
def test_float_images_outside_the_unit_range_are_refused(tiny_vote_model, make, shown):
    image, labels = _image_and_labels()
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    tensor[0, 0, 0], tensor[0, 0, 1] = 0, 255
    with pytest.raises(ValueError, match=r"^image: expected float values in \[0, 1\], got values in") as info:
        tiny_vote_model.refine(make(tensor), torch.from_numpy(labels))
    assert shown in str(info.value)
    unit = tensor.float() / 255  # the documented form gives what its uint8 twin gives
    np.testing.assert_array_equal(
        tiny_vote_model.refine(unit, torch.from_numpy(labels)).numpy(), tiny_vote_model.refine(image, labels)
    )


def test_sixteen_bit_grey_images_are_read_by_their_range(tmp_path):
    from segfix.data.files import read_image

    grey = np.linspace(0, 65535, 60, dtype=np.uint16).reshape(6, 10)
    _write(tmp_path / "g16.png", grey)
    expected = np.rint(grey / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png"), np.repeat(expected[..., None], 3, 2))
    _write(tmp_path / "g8.png", expected)  # its 8-bit twin reads the same
    np.testing.assert_array_equal(read_image(tmp_path / "g8.png"), read_image(tmp_path / "g16.png"))
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match="expected an 8- or 16-bit image, got a float image"):
        read_image(tmp_path / "f.tif")


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


# ------------------------------------------------------------------- hostile sizes refused before they allocate


def test_a_config_that_asks_for_a_huge_backbone_is_refused_before_it_is_built(tmp_path):
    import tracemalloc

    from segfix.model.hub import ModelLoadError

    model = tmp_path / "m"
    segfix.SegFix(**TINY).save_pretrained(model)
    config = json.loads((model / "config.json").read_text())
    huge = {**config, "network": {**config["network"], "backbone": "vit_huge_patch14_224"}}
    huge["network"]["backbone_kwargs"] = {"embed_dim": 20480, "depth": 64}
    (model / "config.json").write_text(json.dumps(huge))
    tracemalloc.start()
    with pytest.raises(ModelLoadError, match="M parameters; a SegFix config may build at most 200 M"):
        segfix.SegFix.from_pretrained(model)
    assert tracemalloc.get_traced_memory()[1] < 200 * 2**20  # counted on the meta device, never allocated
    tracemalloc.stop()
    many = {**config, "network": {**config["network"], "out_indices": list(range(100))}}
    (model / "config.json").write_text(json.dumps(many))
    with pytest.raises(ModelLoadError, match="out_indices: expected 1 to 8 backbone levels"):
        segfix.SegFix.from_pretrained(model)
    unknown = {**config, "network": {**config["network"], "backbone": "resnet5000"}}
    (model / "config.json").write_text(json.dumps(unknown))
    with pytest.raises(ModelLoadError, match="timm does not know 'resnet5000'"):
        segfix.SegFix.from_pretrained(model)


def test_iterations_are_bounded_everywhere(tmp_path, capsys):
    labels, prob, moving = np.zeros((3, 4), np.uint8), np.full((8, 3, 4), 0.125, np.float32), np.ones((3, 4), bool)
    with pytest.raises(ValueError, match=r"^iterations: expected an integer in 1\.\.1024, got 100000000"):
        segfix.vote_labels(labels, prob, moving, iterations=100_000_000)
    field = formats.field_from_offsets(np.zeros((2, 3, 4), np.int8), scale=1)
    with pytest.raises(ValueError, match=r"^iterations: expected an integer in 1\.\.1024"):
        field.with_steps(iterations=10**8)
    np.savez(tmp_path / "hostile.npz", offsets=np.zeros((2, 3, 4), np.int8), iterations=np.int64(10**8))
    with pytest.raises(ValueError, match=r"^iterations: expected an integer in 1\.\.1024"):
        formats.read_field(tmp_path / "hostile.npz", default_scale=2)
    with pytest.raises(SystemExit) as exit_info:
        main(["refine", str(tmp_path), "--offsets", str(tmp_path), "--output", "x", "--iterations", "100000000"])
    assert exit_info.value.code == 2 and "expected an integer in 1..1024" in capsys.readouterr().err


def test_small_files_that_ask_for_huge_arrays_are_refused_from_their_headers(tmp_path, capsys):
    import tracemalloc

    preds, offs = tmp_path / "preds", tmp_path / "offs"
    _write(preds / "a.png", np.zeros((40, 48), np.uint8))
    offs.mkdir()
    np.savez_compressed(offs / "a.npz", offsets=np.zeros((2, 30000, 30000), np.int8))  # 1.7 MB on disk
    tracemalloc.start()
    code = main(["refine", str(preds), "--offsets", str(offs), "--output", str(tmp_path / "out")])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert code == 1 and peak < 100 * 2**20
    assert "a.npz: 30000x30000 offsets; expected at most 67108864 pixels" in capsys.readouterr().err
    np.savez_compressed(offs / "a.npz", offsets=np.zeros((2, 5000, 6000), np.int8))  # under the bound, wrong size
    tracemalloc.start()
    code = main(["refine", str(preds), "--offsets", str(offs), "--output", str(tmp_path / "out")])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert code == 1 and peak < 30 * 2**20  # refused from the header: the 60 MB array was never read
    assert "a.npz: offsets of size 6000x5000 (WxH) do not match the prediction's 48x40" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"RLE size 100000x100000 \(HxW\) does not match the image's 40x48"):
        formats.rle_decode({"size": [100000, 100000], "counts": [10**10]}, (40, 48))
    with pytest.raises(ValueError, match="expected at most 67108864 pixels"):
        formats.rle_decode({"size": [100000, 100000], "counts": [10**10]})
    Image.new("L", (9000, 8000)).save(tmp_path / "big.png")  # 72 megapixels of zeros: a small file
    from segfix.data.files import read_label

    with pytest.raises(ValueError, match=r"big.png: 9000x8000 pixels; expected at most 67108864 pixels"):
        read_label(tmp_path / "big.png")


def test_settings_that_would_take_gigabytes_say_so_before_they_allocate(tiny_vote_model):
    big = tiny_vote_model.with_settings(input_scale=4.0, inference="whole", max_whole_pixels=1 << 28)
    image, labels = np.zeros((1024, 2048, 3), np.uint8), np.zeros((1024, 2048), np.uint8)
    with pytest.raises(
        ValueError, match=r"a 8192x4096 image \(33\.6 M pixels\)|33\.6 M pixels at once \(about 17 GiB\)"
    ):
        big.refine(image, labels)
    huge_window = tiny_vote_model.with_settings(inference="sliding", window_size=16384)
    with pytest.raises(ValueError, match=r"2\.1 M pixels|at once"):
        huge_window.refine(np.zeros((2048, 4096 + 64, 3), np.uint8), np.zeros((2048, 4096 + 64), np.uint8))


# -------------------------------------------------------------------------------------- unclear crashes


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


def test_the_attack_harness_finds_no_wrong_output_no_lost_file_and_no_hang(capsys):
    """tools/attack_inputs.py: 270 mistaken or hostile inputs, each a right answer or one clear error."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("attack_inputs", SRC.parents[1] / "tools" / "attack_inputs.py")
    attack = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = attack  # dataclasses look their module up there
    spec.loader.exec_module(attack)
    assert attack.main([]) == 0, capsys.readouterr().out
    table = capsys.readouterr().out
    total = [line for line in table.splitlines() if line.startswith("| **all** |")]
    cases, right, clear, wrong, lost, hangs = (int(v) for v in total[0].split("|")[2:8])
    assert cases >= 250 and right + clear == cases and wrong == lost == hangs == 0


def test_refine_takes_pil_label_maps_bool_masks_and_grey_or_rgba_images(tiny_vote_model):
    """Every common form of an image or a label map, refined as its plain twin is, and handed back in its form."""
    image, labels = _image_and_labels()
    expected = tiny_vote_model.refine(image, labels)
    palette = Image.fromarray(labels)
    palette.putpalette([v for c in range(256) for v in (c, 255 - c, c // 2)])
    palette.info["transparency"] = 3
    out = tiny_vote_model.refine(image, palette)
    assert isinstance(out, Image.Image) and out.mode == "P" and out.getpalette() == palette.getpalette()
    assert out.info.get("transparency") == 3
    np.testing.assert_array_equal(np.asarray(out), expected)
    mask = labels > 2
    refined_mask = tiny_vote_model.refine(image, mask)
    assert refined_mask.dtype == np.bool_
    np.testing.assert_array_equal(refined_mask, tiny_vote_model.refine(image, mask.astype(np.uint8)).astype(bool))
    tensor_mask = tiny_vote_model.refine(image, torch.from_numpy(mask))
    assert tensor_mask.dtype == torch.bool and torch.equal(tensor_mask, torch.from_numpy(refined_mask))
    grey = image[..., 1]
    np.testing.assert_array_equal(
        tiny_vote_model.refine(grey, labels), tiny_vote_model.refine(np.dstack([grey] * 3), labels)
    )
    rgba = np.dstack([image, np.full(grey.shape, 7, np.uint8)])
    np.testing.assert_array_equal(tiny_vote_model.refine(rgba, labels), expected)
    with pytest.raises(ValueError, match="expected shape \\(H, W, 3\\) RGB, \\(H, W, 4\\) RGBA or \\(H, W\\) grey"):
        tiny_vote_model.refine(image[..., :2], labels)
    with pytest.raises(ValueError, match="^label_map: expected a single-channel label-id image .* got mode RGB"):
        tiny_vote_model.refine(image, Image.fromarray(image))


def test_compile_in_place_and_half_weights_on_the_cpu_warn(tiny_vote_model):
    """model.compile() compiles what refine runs (torch.compile(model) would compile forward alone); float16
    weights on the CPU, emulated and very slow there, say so."""
    model = tiny_vote_model.with_settings()
    model.compile()
    assert model.settings.inference.torch_compile and not tiny_vote_model.settings.inference.torch_compile
    assert model.settings == tiny_vote_model.settings.replace(torch_compile=True)
    with pytest.raises(TypeError, match="compile: takes no arguments"):
        model.compile(mode="max-autotune")
    from segfix.model import inference

    inference._warn_half_on_cpu.cache_clear()
    half = segfix.SegFix(**TINY).half().eval()
    image, labels = _image_and_labels()
    with pytest.warns(UserWarning, match="float16 on the CPU.*model.float()"):
        half.refine(image[:16, :16], labels[:16, :16])


def test_hub_reachable_goes_through_the_proxy_huggingface_hub_uses(monkeypatch):
    """Not a raw socket: the check asks through huggingface_hub's session, so HTTPS_PROXY is honoured (here a
    loopback listener that records the proxy request) and HF_HUB_OFFLINE answers at once."""
    import socket
    import threading

    from huggingface_hub import constants
    from huggingface_hub.utils import close_session

    from segfix.model.pretrained import hub_reachable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub_reachable() is False
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(10)
    seen: list[bytes] = []

    def proxy():
        try:
            connection, _ = server.accept()
            seen.append(connection.recv(1024))
            connection.close()
        except OSError:
            pass

    thread = threading.Thread(target=proxy)
    thread.start()
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{server.getsockname()[1]}")
    close_session()  # the session reads the proxy settings when it is made
    try:
        assert hub_reachable(timeout=5) is False  # the proxy hung up
    finally:
        thread.join(15)
        server.close()
        monkeypatch.delenv("HTTPS_PROXY")
        close_session()
    host = constants.ENDPOINT.split("//")[-1].split("/")[0]
    assert seen and seen[0].startswith(f"CONNECT {host}".encode()), seen
