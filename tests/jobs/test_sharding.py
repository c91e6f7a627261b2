"""Folder jobs split across processes: disjoint slices, each output written once, resumable, one summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import segfix
from helpers import TINY, voronoi_labels
from segfix.cli import main
from segfix.jobs.sharding import Shard


def test_shards_are_disjoint_and_cover_every_item():
    items = [f"f{i:02d}" for i in range(23)]
    for count in (1, 2, 3, 8, 30):
        parts = [Shard(i, count).take(items) for i in range(count)]
        assert sorted(x for p in parts for x in p) == items
        assert sum(map(len, parts)) == len(items)
    assert Shard.parse("3/4") == Shard(3, 4)
    assert Shard.from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == Shard(1, 2)
    assert Shard.from_environment({}) == Shard(0, 1)


@pytest.mark.parametrize("text", ["4/4", "-1/2", "1", "a/b", "1/0"])
def test_bad_shards_name_the_expected_form(text):
    with pytest.raises(ValueError, match="shard: expected"):
        Shard.parse(text)


def make_folders(root, count=7):
    for sub in ("images", "preds"):
        (root / sub).mkdir(parents=True)
    for i in range(count):
        truth = voronoi_labels((40, 56), 8, 5, seed=i)
        coarse = truth.copy()
        coarse[:, 2:] = truth[:, :-2]
        image = np.stack([truth.astype(np.int64) * 50 % 256] * 3, -1).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"img{i}.png")
        Image.fromarray(coarse).save(root / "preds" / f"img{i}.png")
    torch_seed_model = segfix.SegFix(**TINY).with_settings(boundary_threshold=0.3)
    torch_seed_model.save_pretrained(root / "model")


def ledgers(folder):
    # one JSON string a line: any file name, line breaks included, fits
    return {p.name: [json.loads(line) for line in p.read_text().splitlines()] for p in folder.glob(".segfix-refine*")}


def test_torchrun_over_two_processes_writes_each_file_once_and_resumes(tmp_path):
    make_folders(tmp_path)
    common = ["--model", str(tmp_path / "model"), "--images", str(tmp_path / "images"), "--device", "cpu"]
    single = tmp_path / "single"
    assert main(["refine", str(tmp_path / "preds"), *common, "--output", str(single)]) == 0
    # A Slurm-array style first task, then a torchrun launch over the same output: rank 0 finds its slice done.
    split = tmp_path / "split"
    assert main(["refine", str(tmp_path / "preds"), *common, "--output", str(split), "--shard", "0/2"]) == 0
    assert sorted(p.name for p in split.glob("*.png")) == ["img0.png", "img2.png", "img4.png", "img6.png"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(
        [*launch, "-m", "segfix", "refine", str(tmp_path / "preds"), *common, "--output", str(split)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [line for line in result.stdout.splitlines() if line.startswith("segfix refine:")]
    assert summaries == [f"segfix refine: 3 written, 4 already done, 0 failed (2 processes) -> {split}"]
    # Every file written exactly once over the two runs, and each process kept its own ledger.
    written = ledgers(split)
    assert sorted(written) == [".segfix-refine.shard0-of-2.done", ".segfix-refine.shard1-of-2.done"]
    assert written[".segfix-refine.shard0-of-2.done"] == ["img0.png", "img2.png", "img4.png", "img6.png"]
    assert written[".segfix-refine.shard1-of-2.done"] == ["img1.png", "img3.png", "img5.png"]
    for i in range(7):  # the same result as one process
        a = np.asarray(Image.open(single / f"img{i}.png"))
        b = np.asarray(Image.open(split / f"img{i}.png"))
        np.testing.assert_array_equal(a, b)
    # Run again with one process: everything is already done, whatever the number of shards that did it.
    assert main(["refine", str(tmp_path / "preds"), *common, "--output", str(split)]) == 0
    assert ledgers(split) == written


def test_offsets_shard_writes_only_its_slice(tmp_path, capsys):
    make_folders(tmp_path, count=5)
    out = tmp_path / "offsets"
    args = ["offsets", str(tmp_path / "images"), "--model", str(tmp_path / "model"), "--output", str(out)]
    assert main([*args, "--shard", "1/2"]) == 0
    assert sorted(p.name for p in out.glob("*.npz")) == ["img1.npz", "img3.npz"]
    assert "2 written, 0 already done, 0 failed (shard 1/2)" in capsys.readouterr().out
    assert main([*args, "--shard", "0/2"]) == 0
    assert sorted(p.name for p in out.glob("*.npz")) == [f"img{i}.npz" for i in range(5)]
