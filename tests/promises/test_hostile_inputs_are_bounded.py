"""Promise: hostile model folders, files and settings are refused before they build or allocate anything, and the
attack harness finds no wrong output, no lost file and no hang (docs/security.md).
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import segfix
from helpers import TINY
from segfix.cli import main
from segfix.jobs import formats

SRC = Path(segfix.__file__).parent


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "model"
    segfix.SegFix(**TINY).save_pretrained(folder)
    return folder


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


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
    from segfix.hub.settings import FLAT_NAMES

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


def test_a_config_that_asks_for_a_huge_backbone_is_refused_before_it_is_built(tmp_path):
    import tracemalloc

    from segfix.hub.mixin import ModelLoadError

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
