"""Training pieces: sampler, schedule, loss, augmentation, a tiny run, exact resume and 2-process gloo DDP."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import segfix
from helpers import TINY, TRAIN_ARGS, TinySet, cityscapes_and_ade20k_folders, free_port, saved_weights, voronoi_labels
from segfix.data.augment import TrainTransform
from segfix.training.train import MixedBatchSampler, poly_lr, train
from segfix.training.tuning import coarse_proxy


def _ddp_worker(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    final = {}

    def keep(step, model):
        # Parameters must agree; BN running statistics are per-process between DDP's buffer broadcasts.
        final.update({k: v.detach().clone() for k, v in model.named_parameters()})

    try:
        train([TinySet()], folder, iterations=3, on_step_end=keep, **{**TRAIN_ARGS, "batch_size": 4})
        torch.save(final, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_poly_lr():
    assert poly_lr(0.02, 0, 100) == 0.02
    assert poly_lr(0.02, 50, 100) == pytest.approx(0.02 * 0.5**0.9)
    assert poly_lr(0.02, 100, 100) == 0.0


def test_mixed_batches_have_the_set_proportions_and_ranks_partition_them():
    sampler = MixedBatchSampler([100, 30], [0.5, 0.5], 16, steps=5, seed=3)
    for batch in sampler:
        assert sum(1 for d, _, _ in batch if d == 0) == 8 and sum(1 for d, _, _ in batch if d == 1) == 8
        assert all(i < (100 if d == 0 else 30) for d, i, _ in batch)
    ranks = [list(MixedBatchSampler([100, 30], [0.5, 0.5], 16, steps=5, seed=3, rank=r, world=2)) for r in (0, 1)]
    for step, full in enumerate(sampler):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(full)
    three = MixedBatchSampler([10, 10, 10], [2, 1, 1], 8, steps=1).global_batch(0)
    assert [sum(1 for d, *_ in three if d == k) for k in range(3)] == [4, 2, 2]
    with pytest.raises(ValueError, match="divisible"):
        MixedBatchSampler([10], [1], 7, steps=1, world=2)
    resumed = list(MixedBatchSampler([100, 30], [0.5, 0.5], 16, steps=5, seed=3, start_step=3))
    assert resumed == list(sampler)[3:]


def test_tiny_training_run(tmp_path):
    """Three steps move every trained tensor away from the seeded initial weights, the saved folder holds exactly
    the trained weights (not the initial ones, not a copy of another run), and the checkpoint says three steps."""
    from segfix.training.train import build_network

    final = train([TinySet(), TinySet(seed=1)], tmp_path / "run", iterations=3, proportions=(0.5, 0.5), **TRAIN_ARGS)
    loaded = segfix.SegFix.from_pretrained(final)
    initial = build_network({**TINY, "ignore_index": 255}, init=None, imagenet=False, seed=TRAIN_ARGS["seed"])
    saved = saved_weights(final)
    start = {k: v.detach() for k, v in initial.named_parameters()}
    convs = [k for k in start if k.endswith(".weight") and start[k].ndim == 4]
    assert convs and all(not torch.equal(start[k], saved[k].float()) for k in convs), "a conv kept its initial weights"
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor.float(), saved[name].float())
    image = TinySet()[0].image
    assert loaded.predict_offsets(image).shape == (2, 40, 48)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)["step"] == 3


def test_resume_continues_exactly(tmp_path):
    full = train([TinySet()], tmp_path / "full", iterations=4, **TRAIN_ARGS)

    class Killed(Exception):
        pass

    def kill_after_two(step, model):
        if step == 2:
            raise Killed

    with pytest.raises(Killed):
        train([TinySet()], tmp_path / "resumed", iterations=4, on_step_end=kill_after_two, **TRAIN_ARGS)
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not (tmp_path / "resumed" / "model").exists()
    resumed = train([TinySet()], tmp_path / "resumed", iterations=4, resume=True, **TRAIN_ARGS)
    a, b = saved_weights(full), saved_weights(resumed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_validation_scores(tmp_path):
    from PIL import Image

    from segfix.training.train import evaluate_offsets

    model = segfix.SegFix(**TINY).eval()
    scores = evaluate_offsets(model, TinySet(2))
    assert 0.0 <= scores["boundary_f1"] <= 1.0 and 0.0 <= scores["direction_acc"] <= 1.0
    coarse_dir = tmp_path / "coarse"
    coarse_dir.mkdir()
    for s in TinySet(2).samples:
        Image.fromarray(coarse_proxy(s.label, 4, 255).astype(np.uint8)).save(coarse_dir / f"{s.name}.png")
    scores = evaluate_offsets(model, TinySet(2), coarse_dir=coarse_dir)
    assert "miou_gain" in scores and "f1px_gain" in scores


def test_two_process_gloo_ranks_agree(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    p0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    p1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert p0.keys() == p1.keys()
    for key in p0:
        torch.testing.assert_close(p0[key], p1[key], msg=f"ranks disagree on {key}")
    # The very weights the ranks started from (the recipe's seed, as train builds them), not another draw:
    # only against those does "the weights moved" say that the ranks trained.
    from segfix.training.train import build_network

    initial = dict(
        build_network(
            {**TINY, "ignore_index": 255}, init=None, imagenet=False, seed=TRAIN_ARGS["seed"]
        ).named_parameters()
    )
    assert initial.keys() == p0.keys()
    moved = [k for k in p0 if not torch.equal(initial[k].detach(), p0[k])]
    assert len(moved) > len(p0) // 2, f"only {moved} changed"  # training changed most of the weights
    # ... a little: three small steps from these weights, not a different draw (which differs by ~140 %)
    change = torch.cat([(p0[k] - initial[k].detach()).flatten() for k in p0]).norm()
    assert 0 < change / torch.cat([initial[k].detach().flatten() for k in p0]).norm() < 0.3
    assert (tmp_path / "model" / "model.safetensors").is_file()  # rank 0 wrote the final model


def test_cached_targets_with_flips_equal_recomputed_ones(tmp_path):
    sample = TinySet(1)[0]
    cached = TrainTransform(crop_size=64, scale_range=(1.0, 1.0), jitter=0, cache_dir=tmp_path)
    fresh = TrainTransform(crop_size=64, scale_range=(1.0, 1.0), jitter=0)
    for seed in range(6):  # both flipped and unflipped draws, the first one writing the cache
        a = cached(sample, np.random.default_rng(seed))
        b = fresh(sample, np.random.default_rng(seed))
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.boundary, b.boundary)
        agree = (a.direction == b.direction) | (a.boundary != 1)
        assert agree.mean() > 0.97  # flipping cached targets differs only on exact bin edges
    assert (tmp_path / "s0.npz").is_file()


def test_fine_tuning_starts_from_the_given_model(tmp_path):
    first = train([TinySet()], tmp_path / "first", iterations=2, **TRAIN_ARGS)
    settings = {k: v for k, v in TRAIN_ARGS.items() if k not in ("lr", "model")}
    # lr 0: the parameters must stay those of the model it started from (only BN statistics move)
    tuned = train([TinySet()], tmp_path / "tuned", iterations=1, init=first, lr=0.0, class_balance=0.5, **settings)
    a, b = segfix.SegFix.from_pretrained(first), segfix.SegFix.from_pretrained(tuned)
    assert a.config == b.config
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_a_batch_of_one_names_the_flags_to_change(tmp_path):
    """One crop per process small enough for 1x1 deepest features: torch's BatchNorm message alone named no flag."""
    with pytest.raises(ValueError, match="use --batch-size of at least 2 per process, or a larger --crop-size"):
        train([TinySet()], tmp_path / "run", model=dict(TINY), imagenet=False, iterations=1, batch_size=1,
              crop_size=16, workers=0, progress=False, precision="fp32")  # fmt: skip


def test_train_refuses_an_unknown_option(tmp_path):
    with pytest.raises(TypeError, match="itertions"):
        train([TinySet()], tmp_path / "run", itertions=3)


def test_the_unified_recipe_trains_on_cityscapes_and_ade20k_layouts(tmp_path):
    """The mission's recipe, runnable end to end: Cityscapes + ADE20K mixed 8 + 8 in every batch, two steps,
    from the command line, and the saved model loads and refines."""
    from segfix.cli import main
    from segfix.data import datasets as data
    from segfix.training.recipes import RECIPES

    cityscapes_and_ade20k_folders(tmp_path)
    cityscapes, ade20k = data.Cityscapes(tmp_path / "cityscapes", "train"), data.ADE20K(tmp_path / "ade20k", "training")
    assert len(cityscapes) == len(ade20k) == 8
    for sample, (_, label_file) in zip([cityscapes[i] for i in range(8)], cityscapes.pairs):
        train_ids = np.asarray(Image.open(str(label_file).replace("_labelIds", "_labelTrainIds")))
        np.testing.assert_array_equal(sample.label, train_ids)  # labelIds read as the trainIds files say
    annotation = voronoi_labels((64, 96), 6, 5, seed=100).astype(np.int64)
    np.testing.assert_array_equal(ade20k[0].label, np.where(annotation == 0, 255, annotation - 1))  # 0: not scored
    recipe = RECIPES["unified"]
    assert recipe.batch_size == 16 and recipe.proportions == (0.5, 0.5)
    for batch in MixedBatchSampler([8, 8], recipe.proportions, recipe.batch_size, steps=2, seed=0):
        assert [d for d, _, _ in batch].count(0) == [d for d, _, _ in batch].count(1) == 8  # 8 + 8
    run = tmp_path / "run"
    code = main(
        [
            "train", "--recipe", "unified", "--dataset", f"cityscapes={tmp_path / 'cityscapes'}",
            "--dataset", f"ade20k={tmp_path / 'ade20k'}", "--output", str(run), "--iterations", "2",
            "--crop-size", "32", "--backbone", "test_resnet", "--from-scratch", "--workers", "0",
            "--precision", "fp32", "--checkpoint-every", "1",
        ]
    )  # fmt: skip
    assert code == 0 and (run / "checkpoint.pt").is_file()
    model = segfix.SegFix.from_pretrained(run / "model")
    image = np.asarray(Image.open(cityscapes.pairs[0][0]).convert("RGB"))
    coarse = cityscapes[0].label
    refined = model.refine(image, coarse)
    assert refined.shape == coarse.shape and set(np.unique(refined)) <= set(np.unique(coarse))


def test_train_takes_the_thin_weight(tmp_path):
    final = train([TinySet()], tmp_path / "run", iterations=1, thin_weight=4.0, thin_radius=1, class_balance=0.5)
    assert (final / "config.json").is_file()
    with pytest.raises(ValueError, match="thin_weight: expected a number >= 0"):
        train([TinySet()], tmp_path / "bad", iterations=1, thin_weight=-1.0)
