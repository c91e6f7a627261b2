"""Recipes are validated data; each dataset takes its own scale range; chains run stage by stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import segfix
from helpers import cityscapes_and_ade20k_folders, voronoi_labels, write_png_at


def test_recipes_are_validated_values():
    from segfix.training.recipes import RECIPES, TrainRecipe

    assert RECIPES["camvid-cpu"].holdout == 10 and RECIPES["unified"].proportions == (0.5, 0.5)
    changed = RECIPES["camvid-cpu"].replace(lr=0.01, holdout="0001TP")
    assert changed.lr == 0.01 and changed.holdout == "0001TP" and RECIPES["camvid-cpu"].lr == 0.02
    for bad, name in (
        ({"iterations": 0}, "iterations"),
        ({"lr": -1.0}, "lr"),
        ({"scale_range": (2.0, 1.0)}, "scale_range"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"precision": "int8"}, "precision"),
        ({"holdout": -1}, "holdout"),
        ({"proportions": (0.0, 0.0)}, "proportions"),
        ({"copy_paste": 1.5, "paste_classes": (2,)}, "copy_paste"),
        ({"copy_paste": 0.5}, "paste_classes"),
    ):
        with pytest.raises(ValueError, match=name):
            TrainRecipe(**bad)
    with pytest.raises(TypeError, match="unknown training option"):
        TrainRecipe().replace(learning_rate=0.1)


def test_each_dataset_can_have_its_own_scale_range(tmp_path, monkeypatch):
    """Frames of other resolutions need their own scales (CamVid 480x360 enlarged, Cityscapes 2048x1024 seen as
    is): one range per dataset reaches that dataset's transform; one range for all is the recipe's scale_range."""
    from segfix.cli import main
    from segfix.data import augment
    from segfix.training.recipes import TrainRecipe

    recipe = TrainRecipe(scale_ranges=[(1, 2.5), (0.75, 1.25)])
    assert recipe.scale_ranges == ((1.0, 2.5), (0.75, 1.25))
    assert recipe.scale_range_of(1, 2) == (0.75, 1.25) and TrainRecipe().scale_range_of(1, 2) == (0.5, 2.0)
    with pytest.raises(ValueError, match=r"one \(low, high\) per dataset \(3\), got 2"):
        recipe.scale_range_of(0, 3)
    for bad in ([(1.0, 0.5)], [(1.0,)], "1 2", [], [(True, 2.0)]):
        with pytest.raises(ValueError, match="scale_ranges"):
            TrainRecipe(scale_ranges=bad)
    seen: list[tuple[float, float]] = []
    original = augment.TrainTransform.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.scale_range)

    monkeypatch.setattr(augment.TrainTransform, "__init__", spy)
    cityscapes_and_ade20k_folders(tmp_path)
    common = [
        "train", "--dataset", f"cityscapes={tmp_path / 'cityscapes'}", "--dataset", f"ade20k={tmp_path / 'ade20k'}",
        "--iterations", "1", "--batch-size", "2", "--crop-size", "32", "--backbone", "test_resnet", "--from-scratch",
        "--workers", "0", "--precision", "fp32",
    ]  # fmt: skip
    assert (
        main([*common, "--output", str(tmp_path / "a"), "--scale-range", "0.5", "0.6", "--scale-range", "1", "2"]) == 0
    )
    assert seen == [(0.5, 0.6), (1.0, 2.0)]
    seen.clear()
    assert main([*common, "--output", str(tmp_path / "b"), "--scale-range", "0.7", "0.8"]) == 0
    assert seen == [(0.7, 0.8), (0.7, 0.8)]
    # three ranges for two datasets: a usage error before any step
    assert main([*common, "--output", str(tmp_path / "c"), *["--scale-range", "1", "2"] * 3]) == 2
    assert not (tmp_path / "c").exists()


def test_one_command_chains_the_recommended_models_runs_and_resumes_stage_by_stage(tmp_path, capsys):
    """`segfix train --recipe camvid-lite0-v5` runs the four runs of v5's card, each from the model the one
    before made, then gives the result v5's settings; run again after a kill it redoes only what is missing."""
    from segfix.cli import main
    from segfix.training.recipes import RECIPE_CHAINS, RECIPES

    chain = RECIPE_CHAINS["camvid-lite0-v5"]
    cpu = RECIPES["camvid-cpu"]
    assert [s.iterations for s in chain.stages] == [2400, 1700, 1400, 2400]  # the card's runs
    assert chain.stages[3].copy_paste == 0.5 and chain.stages[3].paste_classes == (2, 6, 9, 10)
    assert all(s.model == cpu.model and s.holdout == 10 for s in chain.stages)
    root = tmp_path / "camvid"
    for i in range(6):
        labels = voronoi_labels((48, 64), 6, 11, seed=i).astype(np.uint8)
        write_png_at(root / "train" / f"0001TP_{i:06d}.png", np.stack([labels * 20] * 3, -1).astype(np.uint8))
        write_png_at(root / "trainannot" / f"0001TP_{i:06d}.png", labels)
    run = tmp_path / "run"
    args = ["train", "--recipe", "camvid-lite0-v5", "--dataset", f"camvid={root}", "--output", str(run)]
    short = ["--iterations", "1", "--batch-size", "2", "--crop-size", "32", "--workers", "0", "--holdout", "3"]
    short += ["--precision", "fp32", "--checkpoint-every", "1"]
    assert main([*args, *short]) == 0
    final = segfix.SegFix.from_pretrained(run / "model")
    v5 = segfix.SegFix.from_pretrained("camvid-lite0-v5")
    assert final.settings == v5.settings and final.network_config == v5.network_config
    stages = [segfix.SegFix.from_pretrained(run / f"stage{k}" / "model") for k in range(1, 5)]
    heads = ("net.decoder", "net.boundary_head", "net.direction_head")  # randomly initialised, seed by seed
    for before, after in zip(stages, stages[1:]):  # each run starts from the one before, not a new draw
        a, b = before.state_dict(), after.state_dict()
        keys = [k for k in a if k.startswith(heads) and k.endswith("weight")]
        change = sum(float((b[k].float() - a[k].float()).norm()) for k in keys)
        assert 0 < change < 0.05 * sum(float(a[k].float().norm()) for k in keys)
    last = stages[-1].state_dict()
    for key, value in final.state_dict().items():  # the final model is the last run's weights
        torch.testing.assert_close(value, last[key], rtol=0, atol=0)
    # A kill during stage 3: its model and stage 4 are gone, its checkpoint stays. Run the same command again.
    import shutil

    shutil.rmtree(run / "stage3" / "model")
    shutil.rmtree(run / "stage4")
    shutil.rmtree(run / "model")
    kept = {k: (run / f"stage{k}" / "model" / "model.safetensors").stat().st_mtime_ns for k in (1, 2)}
    assert main([*args, *short]) == 0
    assert {k: (run / f"stage{k}" / "model" / "model.safetensors").stat().st_mtime_ns for k in (1, 2)} == kept
    assert (run / "stage4" / "model" / "config.json").is_file() and (run / "model" / "config.json").is_file()
    # The finished chain asked for more steps: refused, naming the field, instead of "model written" for nothing.
    capsys.readouterr()
    more = [*short[:1], "2", *short[2:]]
    assert main([*args, *more]) == 2
    assert "was trained by another recipe (iterations 1 there, 2 now)" in capsys.readouterr().err
    assert {k: (run / f"stage{k}" / "model" / "model.safetensors").stat().st_mtime_ns for k in (1, 2)} == kept
