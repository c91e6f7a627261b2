"""Training: mixed-dataset batches, SGD with a poly schedule, torch.distributed, resumable checkpoints.

``train(...)`` is a plain loop with typed keyword arguments; :data:`RECIPES` holds the paper's settings as plain
dictionaries. Launch on several GPUs or nodes with ``torchrun --nproc_per_node=K -m segfix train ...``: each
process takes its slice of every global batch (a batch drawn identically on all ranks from a seeded generator),
gradients are averaged by DDP, and rank 0 logs, validates and writes checkpoints.

Every step's batch composition and augmentation are seeded by ``(seed, step)``, so ``resume=True`` continues
exactly where an interrupted run stopped.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ._io import atomic_write
from .augment import TrainTransform
from .losses import segfix_loss, segment_class_weights
from .model import SegFix
from .precision import autocast_context, resolve_precision
from .pretrained import hub_reachable, init_backbone

__all__ = [
    "RECIPES",
    "MixedBatchSampler",
    "TrainState",
    "coarse_proxy",
    "evaluate_offsets",
    "poly_lr",
    "select_settings",
    "train",
    "training_precision",
]

_logger = logging.getLogger(__name__)

RECIPES: dict[str, dict] = {
    # The original Cityscapes recipe (HRNet, 4 GPUs): 80k iterations, batch 16, crop 512, lr 0.04, wd 5e-4.
    "cityscapes": dict(
        cache_targets=True,
        iterations=80_000,
        batch_size=16,
        crop_size=512,
        lr=0.04,
        weight_decay=5e-4,
        scale_range=(1.0, 1.0),
        optimizer="sgd",
    ),
    # Supplementary C: one model for Cityscapes + ADE20K, batch 16 = 8 + 8, lr 0.02, crop 512 for both.
    "unified": dict(
        iterations=100_000,
        batch_size=16,
        crop_size=512,
        lr=0.02,
        weight_decay=5e-4,
        scale_range=(0.5, 2.0),
        optimizer="sgd",
        proportions=(0.5, 0.5),
    ),
    # The bundled CamVid model, trained on a 2-core CPU (see the model card for why these settings).
    "camvid-cpu": dict(
        iterations=2400,
        batch_size=8,
        crop_size=320,
        lr=0.02,
        weight_decay=1e-4,
        scale_range=(0.75, 1.5),
        optimizer="sgd",
        workers=2,
        precision="auto",
        holdout=10,
        model=dict(
            out_indices=(0, 1, 2, 3, 4), decoder="fpn", decoder_channels=48, head_channels=48, head_kernel_size=3
        ),
    ),
}
"""Named settings for :func:`train` (plain data)."""


@dataclass
class TrainState:
    """What a checkpoint holds besides weights."""

    step: int = 0
    history: list[dict] = field(default_factory=list)


def training_precision(device: torch.device) -> str:
    """What ``precision='auto'`` trains in on ``device`` (see :func:`segfix.precision.resolve_precision`): bf16
    on CUDA and on CPUs with bf16 instructions (AVX512-BF16, AMX), else fp32."""
    return resolve_precision("auto", device)


def poly_lr(base_lr: float, step: int, total: int, power: float = 0.9) -> float:
    """The poly schedule ``base_lr * (1 - step / total) ** power``."""
    return base_lr * max(0.0, 1.0 - step / total) ** power


class MixedBatchSampler(Sampler):
    """Global batches mixing several datasets in fixed proportions, sliced per rank.

    Each step's global batch has ``round(batch_size * p_i)`` samples of dataset ``i`` (the last dataset takes
    the remainder), drawn by a generator seeded with ``(seed, step)``; rank ``r`` of ``world`` takes every
    ``world``-th element starting at ``r``. Items are ``(dataset, index, sample_seed)``.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        proportions: Sequence[float],
        batch_size: int,
        steps: int,
        *,
        seed: int = 0,
        start_step: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if len(sizes) != len(proportions) or not sizes:
            raise ValueError(f"proportions: expected one per dataset ({len(sizes)}), got {len(proportions)}")
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes {world}")
        total = float(sum(proportions))
        counts = [round(batch_size * p / total) for p in proportions[:-1]]
        counts.append(batch_size - sum(counts))
        if min(counts) < 0:
            raise ValueError(f"proportions {proportions} do not fit a batch of {batch_size}")
        self.sizes, self.counts = list(sizes), counts
        self.steps, self.seed, self.start_step, self.rank, self.world = steps, seed, start_step, rank, world

    def global_batch(self, step: int) -> list[tuple[int, int, int]]:
        rng = np.random.default_rng([self.seed, step])
        batch = []
        for d, (size, count) in enumerate(zip(self.sizes, self.counts)):
            for index in rng.integers(0, size, count):
                batch.append((d, int(index), int(rng.integers(0, 2**31))))
        return batch

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            yield self.global_batch(step)[self.rank :: self.world]

    def __len__(self) -> int:
        return self.steps - self.start_step


class _TrainingSet(Dataset):
    def __init__(self, datasets: Sequence, transforms: Sequence[TrainTransform]) -> None:
        self.datasets, self.transforms = list(datasets), list(transforms)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, item: tuple[int, int, int]):
        d, index, sample_seed = item
        example = self.transforms[d](self.datasets[d][index], np.random.default_rng(sample_seed))
        return (
            torch.from_numpy(example.image),
            torch.from_numpy(example.boundary),
            torch.from_numpy(example.direction),
            torch.from_numpy(example.label),
        )


def _distributed() -> tuple[int, int, int]:
    """(rank, world, local_rank), initialising torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    if world > 1:
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def train(
    datasets: Sequence,
    output: str | Path,
    *,
    proportions: Sequence[float] | None = None,
    model: dict | None = None,
    init: str | Path | None = None,
    imagenet: bool = True,
    iterations: int = 1000,
    batch_size: int = 8,
    crop_size: int = 512,
    scale_range: tuple[float, float] = (0.5, 2.0),
    max_distance: float = 5,
    class_balance: float = 0.0,
    optimizer: str = "sgd",
    lr: float = 0.02,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    poly_power: float = 0.9,
    workers: int = 2,
    seed: int = 0,
    resume: bool = False,
    checkpoint_every: int = 200,
    validate_every: int = 0,
    val_dataset=None,
    val_coarse: str | Path | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    channels_last: bool | None = None,
    progress: bool = True,
    instance: bool = False,
    cache_targets: bool = False,
    on_step_end=None,
) -> Path:
    """Train a SegFix model; returns the folder of the final model (loadable by ``SegFix.from_pretrained``).

    Args:
        datasets: readers from :mod:`segfix.data` (or anything yielding :class:`segfix.data.Sample`).
        output: run folder: ``checkpoint.pt`` (resumable), ``model/`` (final), ``history.jsonl``.
        proportions: share of each dataset in every batch (default equal), e.g. (0.5, 0.5) for 8 + 8 of 16.
        model: :class:`SegFix` constructor arguments (backbone, decoder, ...); ``num_directions`` also sets the
            targets.
        init: start from this trained model (bundled name, folder or Hub id) instead of ImageNet: its
            architecture and weights are used and ``model`` may only add inference settings. For fine-tuning.
        imagenet: initialise the backbone from ImageNet weights (:func:`segfix.pretrained.init_backbone`: timm's
            from the Hugging Face cache or Hub, else the offline lite0/1/2 packages); a backbone with none raises
            ``LookupError``. False trains from scratch, on purpose, with a warning.
        iterations: training steps.
        batch_size: global batch size, over all processes.
        crop_size: square crop side in pixels.
        scale_range: random scale factor range.
        max_distance: boundary band half-width of the targets.
        class_balance: weight each boundary pixel's direction loss by its semantic class's share of the
            batch's boundary pixels to the power ``-class_balance`` (0: off; see
            :func:`segfix.losses.segment_class_weights`), so thin classes are not drowned by long edges.
        optimizer: ``'sgd'`` (momentum, the original) or ``'adamw'``.
        lr: initial learning rate (poly schedule).
        momentum: SGD momentum.
        weight_decay: weight decay.
        poly_power: exponent of the poly schedule.
        workers: data-loading processes per training process.
        resume: continue from ``output/checkpoint.pt`` (same arguments expected).
        validate_every: run :func:`evaluate_offsets` on ``val_dataset`` every so many steps (0: only at the end).
        val_coarse: folder of coarse predictions ``<name>.png`` for ``val_dataset`` to measure the refinement gain.
        precision: 'fp32', 'bf16', 'fp16' or 'auto': bf16 autocast on CUDA and on CPUs with bf16 instructions
            (AVX512-BF16 / AMX), fp32 on other CPUs, where bf16 is emulated (a camvid-cpu step took 31 s in
            bf16 and 3.3 s in fp32 on a 2-core AVX2 machine); see :mod:`segfix.precision`.
        channels_last: default True on CUDA.
        instance: train on instance targets (``Sample.instance_ids``).
        cache_targets: keep the targets of unscaled samples in ``output/targets/<dataset>/`` and reuse them.
        on_step_end: optional ``callback(step, model)`` called on every process after each step (after the
            checkpoint), e.g. for custom logging.
    """
    rank, world, local_rank = _distributed()
    output = Path(output)
    device = torch.device(device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"))
    precision = resolve_precision(precision, device)
    proportions = list(proportions) if proportions is not None else [1.0] * len(datasets)
    model_kwargs: dict[str, Any] = dict(model or {})
    model_kwargs.setdefault("ignore_index", getattr(datasets[0], "ignore_index", 255))
    # A resumed run takes its weights from the checkpoint: no ImageNet initialisation (None) first.
    net = _build_network(model_kwargs, init=init, imagenet=None if resume else imagenet, seed=seed)
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    net.to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    opt = _make_optimizer(net, optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay)
    checkpoint = output / "checkpoint.pt"
    state = _resume_state(checkpoint, net, opt) if resume and checkpoint.is_file() else TrainState()
    module: nn.Module = net
    if world > 1:
        if device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        module = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    transforms = [
        TrainTransform(
            crop_size,
            scale_range,
            ignore_index=int(getattr(d, "ignore_index", model_kwargs["ignore_index"])),
            max_distance=max_distance,
            num_directions=net.num_directions,
            instance=instance,
            cache_dir=output / "targets" / str(i) if cache_targets else None,
        )
        for i, d in enumerate(datasets)
    ]
    sampler = MixedBatchSampler(
        [len(d) for d in datasets], proportions, batch_size, iterations, seed=seed, start_step=state.step,
        rank=rank, world=world,
    )  # fmt: skip
    loader = DataLoader(
        _TrainingSet(datasets, transforms),
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    meter = _Throughput(iterations, state.step, enabled=progress and rank == 0, world=world)
    net.train()
    for images, boundary, direction, segment in meter.batches(loader):
        step = state.step
        for group in opt.param_groups:
            group["lr"] = poly_lr(lr, step, iterations, poly_power)
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        batch = (images, boundary.to(device), direction.to(device), segment.to(device))
        loss_value, parts = _train_step(net, module, opt, batch, precision=precision, class_balance=class_balance)
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss became {loss_value} at step {step}; lower the learning rate")
        state.step += 1
        meter.step_done(images.shape[0], loss_value, parts, opt.param_groups[0]["lr"])
        done = state.step == iterations
        if rank == 0 and (state.step % checkpoint_every == 0 or done):
            _save_checkpoint(checkpoint, net, opt, state)
        if rank == 0 and val_dataset is not None and ((validate_every and state.step % validate_every == 0) or done):
            _validate(net, val_dataset, val_coarse, state, output / "history.jsonl")
        if on_step_end is not None:
            on_step_end(state.step, net)
    meter.close()
    final = output / "model"
    if rank == 0:
        net.eval()
        net.save_pretrained(final)
    if world > 1:
        dist.barrier()
    return final


def _build_network(model_kwargs: dict, *, init, imagenet: bool | None, seed: int) -> SegFix:
    """A new model (backbone from ImageNet unless told otherwise) or, with ``init``, a trained one to fine-tune."""
    torch.manual_seed(seed)  # the same initial weights on every process and every run
    if init is not None:
        net = SegFix.from_pretrained(str(init), **{k: v for k, v in model_kwargs.items() if k != "ignore_index"})
        net.float()  # bundled weights are stored in fp16; train in fp32 master weights
        net.weights_dtype = None  # and save what was trained, in full precision
        return net
    net = SegFix(**model_kwargs)
    if imagenet is not None:
        backbone_name = model_kwargs.get("backbone", "tf_efficientnet_lite0")
        source = init_backbone(
            net.net.backbone, backbone_name, pretrained=imagenet, local_files_only=not imagenet or not hub_reachable()
        )
        _logger.info("backbone %s initialised from %s", backbone_name, source)
    return net


def _make_optimizer(net: nn.Module, name: str, *, lr: float, momentum: float, weight_decay: float):
    params = [p for p in net.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer: expected 'sgd' or 'adamw', got {name!r}")


def _resume_state(checkpoint: Path, net: nn.Module, opt: torch.optim.Optimizer) -> TrainState:
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    net.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    _logger.info("resumed from %s at step %d", checkpoint, int(saved["step"]))
    return TrainState(step=int(saved["step"]), history=list(saved.get("history", [])))


def _train_step(net: SegFix, module: nn.Module, opt, batch, *, precision: str, class_balance: float):
    """One optimiser step on ``batch`` = (images, boundary, direction, segment); returns (loss, loss parts)."""
    images, boundary, direction, segment = batch
    pixel_weight = segment_class_weights(segment, direction >= 0, class_balance) if class_balance else None
    with autocast_context(images.device, precision):
        boundary_logits, direction_logits = module(net.normalize(images))
    loss, parts = segfix_loss(
        boundary_logits,
        direction_logits,
        boundary,
        direction,
        align_corners=net.align_corners,
        direction_pixel_weight=pixel_weight,
    )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach()), parts


def _validate(net: SegFix, dataset, coarse_dir, state: TrainState, history_file: Path) -> None:
    net.eval()
    scores = evaluate_offsets(net, dataset, coarse_dir=coarse_dir)
    net.train()
    scores["step"] = state.step
    state.history.append(scores)
    _logger.info("step %d: %s", state.step, {k: round(v, 4) for k, v in scores.items()})
    _append_history(history_file, scores)


class _Throughput:
    """The progress bar of a training run: loss parts, learning rate, images per second, time spent waiting
    for data."""

    def __init__(self, total: int, initial: int, *, enabled: bool, world: int) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="segfix train", dynamic_ncols=True)
        self.world, self.images, self.wait, self.compute = world, 0, 0.0, 0.0
        self.tick = time.perf_counter()

    def batches(self, loader):
        for batch in loader:
            fetched = time.perf_counter()
            self.wait += fetched - self.tick
            self.tick = fetched
            yield batch

    def step_done(self, batch_size: int, loss: float, parts: dict, lr: float) -> None:
        now = time.perf_counter()
        self.compute += now - self.tick
        self.tick = now
        self.images += batch_size * self.world
        if self.bar is not None:
            busy = max(self.wait + self.compute, 1e-9)
            self.bar.update(1)
            self.bar.set_postfix(
                loss=f"{loss:.3f}", bnd=f"{parts['boundary']:.3f}", dir=f"{parts['direction']:.3f}",
                lr=f"{lr:.4f}", img_s=f"{self.images / busy:.1f}", data=f"{self.wait / busy:.0%}",
            )  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _save_checkpoint(path: Path, net: SegFix, opt: torch.optim.Optimizer, state: TrainState) -> None:
    payload = {"model": net.state_dict(), "optimizer": opt.state_dict(), "step": state.step, "history": state.history}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _append_history(path: Path, scores: dict) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(scores) + "\n")


@torch.inference_mode()
def evaluate_offsets(
    model: SegFix, dataset, *, coarse_dir: str | Path | None = None, max_distance: float = 5, limit: int | None = None
) -> dict[str, float]:
    """Validation scores of a SegFix model on a labelled dataset.

    * ``boundary_f1``: pixel F1 of the predicted boundary against the ground-truth band;
    * ``direction_acc``: direction accuracy on ground-truth boundary pixels, counting pixels predicted as
      non-boundary as wrong (the original's "dir (GT)" model-selection metric);
    * with ``coarse_dir``: ``miou_gain`` and ``f1px_gain`` of refining the coarse predictions there.
    """
    from ._io import read_label
    from .metrics import SegmentationMetrics

    tp = fp = fn = correct = total = 0
    before = SegmentationMetrics(dataset.num_classes, ignore_index=dataset.ignore_index, tolerances=(1,))
    after = SegmentationMetrics(dataset.num_classes, ignore_index=dataset.ignore_index, tolerances=(1,))
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(count):
        sample = dataset[i]
        targets = _targets_for(sample.label, dataset.ignore_index, max_distance, model.num_directions)
        pred = model.predict(sample.image, direction_prob=coarse_dir is not None and model.direction_vote)
        valid = sample.label != dataset.ignore_index
        gt_b = targets.boundary & valid
        pr_b = pred.boundary & valid
        tp += int((gt_b & pr_b).sum())
        fp += int((~gt_b & pr_b).sum())
        fn += int((gt_b & ~pr_b).sum())
        correct += int((gt_b & pr_b & (pred.direction == targets.direction)).sum())
        total += int(gt_b.sum())
        if coarse_dir is not None:
            coarse = read_label(Path(coarse_dir) / f"{sample.name}.png")
            # The prediction above already holds what refining needs: no second network pass.
            refined = model.refine_prediction(pred, coarse, ignore_index=dataset.ignore_index)
            label = np.where(valid, sample.label, dataset.ignore_index)
            before.update(coarse, label)
            after.update(refined, label)
    scores = {"boundary_f1": 2 * tp / max(2 * tp + fp + fn, 1), "direction_acc": correct / max(total, 1)}
    if coarse_dir is not None:
        b, a = before.compute(), after.compute()
        scores["miou_gain"] = (a.miou - b.miou) * 100
        scores["f1px_gain"] = (a.mean_boundary_f[1] - b.mean_boundary_f[1]) * 100
    return scores


def _targets_for(label: np.ndarray, ignore_index: int, max_distance: float, num_directions: int):
    from .targets import boundary_targets

    return boundary_targets(
        label, ignore_index=ignore_index, max_distance=max_distance, num_directions=num_directions, border="replicate"
    )


def coarse_proxy(label: np.ndarray, num_classes: int, ignore_index: int, stride: int = 8) -> np.ndarray:
    """A stand-in for a segmentation network's output: ``label`` seen through a stride-``stride`` model
    (majority vote per block, bilinear upsampling of the one-hot votes, argmax). Used to choose inference
    settings on held-out training images, which have no real coarse predictions."""
    import torch.nn.functional as F

    h, w = label.shape
    lab = torch.from_numpy(np.where(label == ignore_index, num_classes, label).astype(np.int64))
    one_hot = F.one_hot(lab, num_classes + 1).permute(2, 0, 1)[None].float()
    votes = F.avg_pool2d(one_hot, stride, ceil_mode=True)[:, :num_classes]
    up = F.interpolate(votes, size=(h, w), mode="bilinear", align_corners=False)
    return up[0].argmax(0).numpy().astype(label.dtype)


COST_MARGIN = 0.05
"""mIoU points a cheaper setting may trail the best one by and still be chosen by :func:`select_settings`."""


@torch.inference_mode()
def select_settings(
    model: SegFix,
    dataset,
    *,
    scales: Sequence[int] = (1, 2),
    iterations: Sequence[int] = (1, 2),
    thresholds: Sequence[float] = (0.4, 0.5, 0.6),
    direction_thresholds: Sequence[float] = (0.0, 0.5),
    votes: Sequence[bool] = (False, True),
    flips: Sequence[bool] = (False, True),
    min_short_sides: Sequence[int] = (0,),
    stride: int = 8,
) -> tuple[dict, list[dict]]:
    """Pick ``semantic_scale``, ``iterations``, ``boundary_threshold``, ``direction_threshold``,
    ``direction_vote``, ``flip_tta`` and ``min_short_side`` on held-out data by the mIoU gain of refining
    :func:`coarse_proxy` predictions (ties: boundary F-score at 1 px). Returns (best, all rows); the model is
    left as it was. Of settings within :data:`COST_MARGIN` of the best gain the cheapest is taken
    (:func:`choose_row`)."""
    from .metrics import SegmentationMetrics
    from .model import Prediction

    keys = (
        "boundary_threshold",
        "direction_threshold",
        "semantic_scale",
        "iterations",
        "direction_vote",
        "flip_tta",
        "min_short_side",
    )
    saved = {k: getattr(model, k) for k in keys}
    samples = [dataset[i] for i in range(len(dataset))]
    # A size that no held-out image is below changes nothing: measuring it again would only repeat size 0.
    min_short_sides = [
        m for m in min_short_sides if m == 0 or any(min(s.image.shape[:2]) * model.input_scale < m for s in samples)
    ] or [0]
    coarse = [coarse_proxy(s.label, dataset.num_classes, dataset.ignore_index, stride) for s in samples]
    base = SegmentationMetrics(
        dataset.num_classes, ignore_index=dataset.ignore_index, tolerances=(1,), boundary_iou_dilation=None
    )
    for sample, proxy in zip(samples, coarse):
        base.update(proxy, sample.label)
    b = base.compute()
    rows = []
    # The search sets the model's attributes one combination at a time; the caller gets its model back.
    try:
        dense: dict[tuple[bool, int], list] = {}
        for flip, short_side in itertools.product(flips, min_short_sides):
            model.flip_tta, model.min_short_side = flip, short_side
            dense[flip, short_side] = []
            for sample in samples:
                prob, logits = model.dense(sample.image)
                dense[flip, short_side].append((prob, logits, logits.softmax(1)))
        grid = itertools.product(thresholds, direction_thresholds, scales, iterations, votes, flips, min_short_sides)
        for combo in grid:
            for key, value in zip(keys, combo):
                setattr(model, key, value)
            m = SegmentationMetrics(
                dataset.num_classes, ignore_index=dataset.ignore_index, tolerances=(1,), boundary_iou_dilation=None
            )
            for sample, proxy, (prob, logits, direction_prob) in zip(
                samples, coarse, dense[model.flip_tta, model.min_short_side]
            ):
                _, direction, moving = model.decide(prob, logits, direction_prob)
                prediction = Prediction(prob[0], direction[0], moving[0], direction_prob[0])
                m.update(model.refine_prediction(prediction, proxy, ignore_index=dataset.ignore_index), sample.label)
            a = m.compute()
            rows.append(
                {
                    **dict(zip(keys, combo)),
                    "miou_gain": (a.miou - b.miou) * 100,
                    "f1px_gain": (a.mean_boundary_f[1] - b.mean_boundary_f[1]) * 100,
                }
            )
    finally:
        for key, value in saved.items():
            setattr(model, key, value)
    return {k: v for k, v in choose_row(rows, samples, model.input_scale).items() if k in keys}, rows


def choose_row(rows: Sequence[dict], samples: Sequence, input_scale: float = 1.0, margin: float = COST_MARGIN) -> dict:
    """The cheapest of the rows whose mIoU gain is within ``margin`` points of the best (then the larger gain,
    then boundary F-score). Cost counts network passes: flip averaging doubles it, upscaling by ``f`` costs
    ``f**2``, so a flip or a larger size is kept only where it pays on the held-out images."""
    best_gain = max(r["miou_gain"] for r in rows)
    shorts = [min(s.image.shape[:2]) for s in samples]

    def cost(row: dict) -> float:
        factors = [
            max(input_scale, row["min_short_side"] / short) if row["min_short_side"] else input_scale
            for short in shorts
        ]
        return (2 if row["flip_tta"] else 1) * sum(min(f, 4.0) ** 2 for f in factors)

    close = [r for r in rows if r["miou_gain"] >= best_gain - margin]
    return min(close, key=lambda r: (round(cost(r), 6), -r["miou_gain"], -r["f1px_gain"]))
