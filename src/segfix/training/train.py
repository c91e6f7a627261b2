"""Training: mixed-dataset batches, SGD with a poly schedule, torch.distributed, resumable checkpoints.

``train(...)`` is a plain loop with typed keyword arguments; :data:`RECIPES` holds the paper's settings as plain
dictionaries. Launch on several GPUs or nodes with ``torchrun --nproc_per_node=K -m segfix train ...``: each
process takes its slice of every global batch (a batch drawn identically on all ranks from a seeded generator),
gradients are averaged by DDP, and rank 0 logs, validates and writes checkpoints.

Every step's batch composition and augmentation are seeded by ``(seed, step)``, so ``resume=True`` continues
exactly where an interrupted run stopped.
"""

from __future__ import annotations

import dataclasses
import json
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

from ..data.augment import TrainTransform
from ..data.files import atomic_write, describe_change, differences_from_record
from ..hub.registry import hub_reachable
from ..network.precision import autocast_context, resolve_precision
from ..prediction.segfix_model import SegFix
from .imagenet import init_backbone
from .losses import segfix_loss, segment_class_weights, thin_part_weights
from .recipes import RecipeChain, TrainRecipe

__all__ = ["train", "train_chain", "training_precision"]

_logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    """What a checkpoint holds besides weights."""

    step: int = 0
    history: list[dict] = field(default_factory=list)


def training_precision(device: torch.device) -> str:
    """What ``precision='auto'`` trains in on ``device`` (see :func:`segfix.network.precision.resolve_precision`): bf16
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
    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __init__(self, datasets: Sequence, transforms: Sequence[TrainTransform], copy_paste: float = 0.0) -> None:
        self.datasets, self.transforms, self.copy_paste = list(datasets), list(transforms), copy_paste

    def __getitem__(self, item: tuple[int, int, int]):
        d, index, sample_seed = item
        rng = np.random.default_rng(sample_seed)
        source = None
        # Drawn from the sample's own generator, and only when asked for: runs without copy-paste keep their
        # batches, and a resumed run its exact ones.
        if self.copy_paste and rng.random() < self.copy_paste:
            source = self.datasets[d][int(rng.integers(len(self.datasets[d])))]
        example = self.transforms[d](self.datasets[d][index], rng, paste_source=source)
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
    recipe: TrainRecipe | None = None,
    *,
    val_dataset=None,
    on_step_end=None,
    **options: Any,
) -> Path:
    """Train a SegFix model; returns the folder of the final model (loadable by ``SegFix.from_pretrained``).

    Args:
        datasets: readers from :mod:`segfix.data.datasets` (or anything yielding :class:`segfix.data.datasets.Sample`).
        output: run folder: ``checkpoint.pt`` (resumable), ``model/`` (final), ``history.jsonl``.
        recipe: every setting of the run (:class:`segfix.training.recipes.TrainRecipe`; default its defaults).
        val_dataset: validate on it (:func:`evaluate_offsets`) every ``validate_every`` steps and at the end.
        on_step_end: optional ``callback(step, model)`` called on every process after each step (after the
            checkpoint), e.g. for custom logging.
        options: recipe fields to change by name, e.g. ``iterations=100, lr=0.01``.

    Launch on several GPUs or nodes with ``torchrun``: each process takes its slice of every global batch.
    """
    recipe = (recipe or TrainRecipe()).replace(**options)
    rank, world, local_rank = _distributed()
    output = Path(output)
    claim_run(output, recipe, write=rank == 0)
    device = torch.device(recipe.device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"))
    model_kwargs: dict[str, Any] = dict(recipe.model or {})
    model_kwargs.setdefault("ignore_index", getattr(datasets[0], "ignore_index", 255))
    # A resumed run takes its weights from the checkpoint: no ImageNet initialisation (None) first.
    imagenet = None if recipe.resume else recipe.imagenet
    net = build_network(model_kwargs, init=recipe.init, imagenet=imagenet, seed=recipe.seed)
    channels_last = device.type == "cuda" if recipe.channels_last is None else recipe.channels_last
    net.to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    opt = _make_optimizer(
        net, recipe.optimizer, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    checkpoint = output / "checkpoint.pt"
    state = _resume_state(checkpoint, net, opt) if recipe.resume and checkpoint.is_file() else TrainState()
    module: nn.Module = net
    if world > 1:
        if device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        module = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    loader = _make_loader(
        datasets, recipe, net.num_directions, model_kwargs["ignore_index"], output, state.step, device
    )
    run = _Run(net, module, opt, state, recipe, device, resolve_precision(recipe.precision, device), channels_last)
    run.steps(loader, checkpoint, output, val_dataset, on_step_end)
    final = output / "model"
    if rank == 0:
        net.eval()
        net.save_pretrained(final)
    if world > 1:
        dist.barrier()
    return final


def _make_loader(
    datasets: Sequence,
    recipe: TrainRecipe,
    num_directions: int,
    ignore_index: int,
    output: Path,
    start_step: int,
    device: torch.device,
) -> DataLoader:
    """Batches of ``(images, boundary, direction, segment)`` by the recipe, from ``start_step`` on."""
    rank, world, _ = _distributed()
    transforms = [
        TrainTransform(
            recipe.crop_size,
            recipe.scale_range_of(i, len(datasets)),
            ignore_index=int(getattr(d, "ignore_index", ignore_index)),
            max_distance=recipe.max_distance,
            num_directions=num_directions,
            instance=recipe.instance,
            cache_dir=output / "targets" / str(i) if recipe.cache_targets else None,
            paste_classes=recipe.paste_classes,
        )
        for i, d in enumerate(datasets)
    ]
    proportions = list(recipe.proportions) if recipe.proportions is not None else [1.0] * len(datasets)
    sampler = MixedBatchSampler(
        [len(d) for d in datasets], proportions, recipe.batch_size, recipe.iterations, seed=recipe.seed,
        start_step=start_step, rank=rank, world=world,
    )  # fmt: skip
    return DataLoader(
        _TrainingSet(datasets, transforms, recipe.copy_paste if recipe.paste_classes else 0.0),
        batch_sampler=sampler,
        num_workers=recipe.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if recipe.workers else None,
    )


@dataclass
class _Run:
    """One training run's moving parts; :meth:`steps` is the loop."""

    net: SegFix
    module: nn.Module
    opt: torch.optim.Optimizer
    state: TrainState
    recipe: TrainRecipe
    device: torch.device
    precision: str
    channels_last: bool

    def steps(self, loader: DataLoader, checkpoint: Path, output: Path, val_dataset, on_step_end) -> None:
        recipe, state, opt = self.recipe, self.state, self.opt
        rank, world, _ = _distributed()
        meter = _Throughput(recipe.iterations, state.step, enabled=recipe.progress and rank == 0, world=world)
        self.net.train()
        for images, boundary, direction, segment in meter.batches(loader):
            for group in opt.param_groups:
                group["lr"] = poly_lr(recipe.lr, state.step, recipe.iterations, recipe.poly_power)
            images = images.to(self.device, non_blocking=True)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            batch = (images, boundary.to(self.device), direction.to(self.device), segment.to(self.device))
            loss, parts = _train_step(self.net, self.module, opt, batch, precision=self.precision, recipe=recipe)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {state.step}; lower the learning rate")
            state.step += 1
            meter.step_done(images.shape[0], loss, parts, opt.param_groups[0]["lr"])
            done = state.step == recipe.iterations
            if rank == 0 and (state.step % recipe.checkpoint_every == 0 or done):
                _save_checkpoint(checkpoint, self.net, opt, state)
            validate = (recipe.validate_every and state.step % recipe.validate_every == 0) or done
            if rank == 0 and val_dataset is not None and validate:
                _validate(self.net, val_dataset, recipe.val_coarse, state, output / "history.jsonl")
            if on_step_end is not None:
                on_step_end(state.step, self.net)
        meter.close()


def build_network(model_kwargs: dict, *, init, imagenet: bool | None, seed: int) -> SegFix:
    """A new model (backbone from ImageNet unless told otherwise) or, with ``init``, a trained one to fine-tune."""
    torch.manual_seed(seed)  # the same initial weights on every process and every run
    if init is not None:
        net = SegFix.from_pretrained(str(init), **{k: v for k, v in model_kwargs.items() if k != "ignore_index"})
        net.float()  # bundled weights are stored in fp16; train in fp32 master weights
        net.weights_dtype = None  # and save what was trained, in full precision
        return net
    net = SegFix.from_config(model_kwargs)
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


def _train_step(net: SegFix, module: nn.Module, opt, batch, *, precision: str, recipe: TrainRecipe):
    """One optimiser step on ``batch`` = (images, boundary, direction, segment); returns (loss, loss parts)."""
    images, boundary, direction, segment = batch
    pixel_weight = _direction_pixel_weight(segment, direction >= 0, recipe)
    with autocast_context(images.device, precision):
        try:
            boundary_logits, direction_logits = module(net.normalize(images))
        except ValueError as error:
            if "more than 1 value per channel" not in str(error):
                raise
            raise ValueError(
                f"batch normalisation needs more than one value per channel, and a batch of {images.shape[0]} "
                f"crop(s) of {recipe.crop_size} px per process leaves the deepest features 1x1: use --batch-size "
                "of at least 2 per process, or a larger --crop-size"
            ) from error
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


def _direction_pixel_weight(segment: torch.Tensor, supervised: torch.Tensor, recipe: TrainRecipe):
    """The direction term's per-pixel weights of ``recipe`` (class balance, thin parts), or None for plain."""
    weight = None
    if recipe.class_balance:
        weight = segment_class_weights(segment, supervised, recipe.class_balance)
    if recipe.thin_weight != 1.0:
        thin = thin_part_weights(segment, supervised, recipe.thin_radius, recipe.thin_weight)
        weight = thin if weight is None else weight * thin
    return weight


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
    from ..data.files import read_label
    from ..metrics.accumulators import SegmentationMetrics

    tp = fp = fn = correct = total = 0
    before = SegmentationMetrics(dataset.num_classes, ignore_index=dataset.ignore_index, tolerances=(1,))
    after = SegmentationMetrics(dataset.num_classes, ignore_index=dataset.ignore_index, tolerances=(1,))
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(count):
        sample = dataset[i]
        targets = _targets_for(sample.label, dataset.ignore_index, max_distance, model.num_directions)
        pred = model.predict(
            sample.image, direction_prob=coarse_dir is not None and model.settings.decision.direction_vote
        )
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
    from ..ops.targets import boundary_targets

    return boundary_targets(
        label, ignore_index=ignore_index, max_distance=max_distance, num_directions=num_directions, border="replicate"
    )


_NOT_THE_RESULT = ("resume", "progress", "workers", "device", "checkpoint_every", "validate_every", "val_coarse")
"""Recipe fields that change how a run goes, not what it trains: a resumed run may change them."""


def claim_run(output: Path, recipe: TrainRecipe, *, write: bool) -> None:
    """Record the recipe a run folder is trained by (``recipe.json``), or refuse a folder trained by another: its
    checkpoint or model would otherwise be taken as this recipe's, and a finished run would train nothing.

    Raises:
        ValueError: the folder's recorded recipe differs, naming the fields and both values.
    """
    path = Path(output) / "recipe.json"
    wanted = {k: v for k, v in dataclasses.asdict(recipe).items() if k not in _NOT_THE_RESULT}
    changed = differences_from_record(path, wanted, write=write)
    if changed:
        recorded = json.loads(path.read_text())
        now = json.loads(json.dumps(wanted, default=str))
        what = "; ".join(describe_change(k, recorded.get(k), now.get(k)) for k in changed)
        raise ValueError(
            f"{output} was trained by another recipe ({what}); choose another --output, or remove that folder to "
            "train it again"
        )


def train_chain(
    datasets: Sequence, output: str | Path, chain: RecipeChain, *, val_dataset=None, **options: Any
) -> Path:
    """Run a :class:`segfix.training.recipes.RecipeChain`: stage ``k`` trains into ``output/stage<k>`` from the model of
    stage ``k - 1``; the final model, the last stage's weights with the chain's settings, goes to
    ``output/model``. Returns that folder.

    Resumable at every stage: a stage whose model is saved is skipped, a stage with a checkpoint continues from
    it, so the same command, run again after a kill, finishes the chain. ``options`` change every stage's
    recipe (e.g. ``iterations`` for a short run), except ``init`` and ``resume``, which the chain sets.
    """
    output = Path(output)
    options = {k: v for k, v in options.items() if k not in ("init", "resume")}
    previous: Path | None = None
    for number, stage in enumerate(chain.stages, start=1):
        folder = output / f"stage{number}"
        recipe = stage.replace(**options, resume=(folder / "checkpoint.pt").is_file())
        if previous is not None:
            recipe = recipe.replace(init=str(previous))
        if (folder / "model" / "config.json").is_file() and (folder / "model" / "model.safetensors").is_file():
            claim_run(folder, recipe, write=False)  # done, but only for the recipe asked for now
            _logger.info("stage %d of %d: already done (%s)", number, len(chain.stages), folder / "model")
            previous = folder / "model"
            continue
        _logger.info("stage %d of %d -> %s", number, len(chain.stages), folder)
        last = number == len(chain.stages)
        previous = train(datasets, folder, recipe, val_dataset=val_dataset if last else None)
    if previous is None:  # pragma: no cover - a chain has at least one stage
        raise ValueError("train_chain: expected at least one stage")
    settings = {}
    if chain.settings_of is not None:
        settings = SegFix.from_pretrained(chain.settings_of).settings.flat()
    final = SegFix.from_pretrained(previous, **settings)
    final.save_pretrained(output / "model")
    return output / "model"
