"""Training recipes: every setting of a :func:`segfix.training.train.train` run as one validated, frozen value.

:data:`RECIPES` names the paper's recipes and the bundled CamVid model's. A recipe is plain data: change a field
with ``dataclasses.replace(recipe, lr=0.01)`` or pass it to ``train(..., lr=0.01)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

from ..limits import check_int_range
from ..network.precision import PRECISIONS

__all__ = ["RECIPES", "RECIPE_CHAINS", "RecipeChain", "TrainRecipe"]

OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class TrainRecipe:
    """How to train a SegFix model.

    Attributes:
        proportions: share of each dataset in every batch (None: equal), e.g. (0.5, 0.5) for 8 + 8 of 16.
        model: :class:`segfix.SegFix` arguments (backbone, decoder, ...); ``num_directions`` also sets the targets.
        init: start from this trained model (bundled name, folder or Hub id) instead of ImageNet: its
            architecture and weights are used and ``model`` may only add inference settings. For fine-tuning.
        imagenet: initialise the backbone from ImageNet weights (:func:`segfix.training.imagenet.init_backbone`); False
            trains from scratch, on purpose, with a warning.
        iterations: training steps.
        batch_size: global batch size, over all processes.
        crop_size: square crop side in pixels.
        scale_range: random scale factor range (low, high).
        scale_ranges: one (low, high) per dataset instead, in the order the datasets are given (None: ``scale_range``
            for every dataset). Datasets of other resolutions need their own: CamVid's 480x360 frames are enlarged
            (1.0-2.5) where Cityscapes' 2048x1024 ones are seen about as they are (0.75-1.25).
        max_distance: boundary band half-width of the targets.
        class_balance: weight each boundary pixel's direction loss by its class's share of the batch's boundary
            pixels to the power ``-class_balance`` (0: off; :func:`segfix.training.losses.segment_class_weights`).
        thin_weight: weight of the direction loss at boundary pixels in thin parts of their ground-truth segment
            (narrower than ``2 * thin_radius + 1`` px: poles), against 1 elsewhere (1: off;
            :func:`segfix.training.losses.thin_part_weights`).
        thin_radius: the radius of those thin parts.
        copy_paste: probability that a training image gets the ``paste_classes`` of another image of its
            dataset pasted on (:func:`segfix.data.augment.paste_segments`; 0: off).
        paste_classes: class ids to paste, e.g. CamVid's pole, sign, pedestrian and bicyclist ``(2, 6, 9, 10)``.
        optimizer: ``'sgd'`` (momentum, the original) or ``'adamw'``.
        lr: initial learning rate (poly schedule).
        momentum: SGD momentum.
        weight_decay: weight decay.
        poly_power: exponent of the poly schedule.
        workers: data-loading processes per training process.
        seed: seeds every batch and augmentation by ``(seed, step)``, so a resumed run is exact.
        resume: continue from ``output/checkpoint.pt`` (same recipe expected).
        checkpoint_every: steps between checkpoints.
        validate_every: validate every so many steps (0: only at the end, when a validation set is given).
        val_coarse: folder of coarse predictions ``<name>.png`` of the validation set, to measure the gain.
        device: where to train (None: the process's GPU, else the CPU).
        precision: ``'auto'`` (bf16 on CUDA and on CPUs with bf16 instructions, else fp32:
            :mod:`segfix.network.precision`), ``'fp32'``, ``'bf16'`` or ``'fp16'``.
        channels_last: None: True on CUDA.
        progress: show a progress bar (rank 0).
        instance: train on instance targets (``Sample.instance_ids``).
        cache_targets: keep the targets of unscaled samples under ``output/targets/`` and reuse them.
        holdout: training images the command line keeps out of the first dataset to choose the inference settings
            on (every N-th, or those whose name starts with a prefix such as a CamVid drive; 0: none).
            :func:`segfix.training.train.train` itself trains on the datasets it is given.
    """

    proportions: tuple[float, ...] | None = None
    model: Mapping[str, Any] | None = None
    init: str | Path | None = None
    imagenet: bool = True
    iterations: int = 1000
    batch_size: int = 8
    crop_size: int = 512
    scale_range: tuple[float, float] = (0.5, 2.0)
    scale_ranges: tuple[tuple[float, float], ...] | None = None
    max_distance: float = 5
    class_balance: float = 0.0
    thin_weight: float = 1.0
    thin_radius: int = 2
    copy_paste: float = 0.0
    paste_classes: tuple[int, ...] = ()
    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    workers: int = 2
    seed: int = 0
    resume: bool = False
    checkpoint_every: int = 200
    validate_every: int = 0
    val_coarse: str | Path | None = None
    device: Any = None
    precision: str = "auto"
    channels_last: bool | None = None
    progress: bool = True
    instance: bool = False
    cache_targets: bool = False
    holdout: int | str = 0

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "crop_size", "checkpoint_every"):
            _positive_int(getattr(self, name), name)
        for name in ("workers", "validate_every", "seed"):
            _positive_int(getattr(self, name), name, low=0)
        _positive_int(self.thin_radius, "thin_radius")
        names = ("lr", "weight_decay", "momentum", "class_balance", "thin_weight", "max_distance", "poly_power")
        for name in (*names, "copy_paste"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
        object.__setattr__(self, "scale_range", _scale_pair(self.scale_range, "scale_range"))
        if self.scale_ranges is not None:
            if isinstance(self.scale_ranges, (str, bytes)) or not self.scale_ranges:
                raise ValueError(f"scale_ranges: expected one (low, high) per dataset, got {self.scale_ranges!r}")
            pairs = tuple(_scale_pair(pair, "scale_ranges") for pair in self.scale_ranges)
            object.__setattr__(self, "scale_ranges", pairs)
        if self.proportions is not None:
            if not self.proportions or min(self.proportions) < 0 or sum(self.proportions) <= 0:
                raise ValueError(f"proportions: expected shares >= 0 with a positive sum, got {self.proportions!r}")
            object.__setattr__(self, "proportions", tuple(float(p) for p in self.proportions))
        if not 0 <= self.copy_paste <= 1:
            raise ValueError(f"copy_paste: expected a probability in [0, 1], got {self.copy_paste!r}")
        if self.copy_paste and not self.paste_classes:
            raise ValueError("copy_paste: expected paste_classes (the class ids to paste), got none")
        object.__setattr__(self, "paste_classes", tuple(int(c) for c in self.paste_classes))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        if not isinstance(self.holdout, str):
            _positive_int(self.holdout, "holdout", low=0)

    def scale_range_of(self, dataset: int, datasets: int) -> tuple[float, float]:
        """The random scale range of the ``dataset``-th of ``datasets`` datasets.

        Raises:
            ValueError: ``scale_ranges`` holds another number of ranges than there are datasets.
        """
        if self.scale_ranges is None:
            return self.scale_range
        if len(self.scale_ranges) != datasets:
            raise ValueError(
                f"scale_ranges: expected one (low, high) per dataset ({datasets}), got {len(self.scale_ranges)}"
            )
        return self.scale_ranges[dataset]

    def replace(self, **changes: Any) -> TrainRecipe:
        """This recipe with some fields changed (validated); an unknown name is refused with the known ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown training option(s) {unknown}; a TrainRecipe has {sorted(known)}")
        return dataclasses.replace(self, **changes)


def _scale_pair(pair: Any, name: str) -> tuple[float, float]:
    """(low, high) with 0 < low <= high, as floats."""
    try:
        low, high = pair
        ok = all(not isinstance(v, bool) and isinstance(v, Real) for v in (low, high)) and 0 < low <= high
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name}: expected (low, high) with 0 < low <= high, got {pair!r}")
    return float(low), float(high)


def _positive_int(value: Any, name: str, low: int = 1) -> None:
    check_int_range(value, name, low)


RECIPES: dict[str, TrainRecipe] = {
    # The original Cityscapes recipe (HRNet, 4 GPUs): 80k iterations, batch 16, crop 512, lr 0.04, wd 5e-4.
    "cityscapes": TrainRecipe(
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
    "unified": TrainRecipe(
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
    "camvid-cpu": TrainRecipe(
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
"""Named recipes for :func:`segfix.training.train.train` (plain data)."""


@dataclass(frozen=True)
class RecipeChain:
    """Training runs in a row, each fine-tuning the model the one before made
    (:func:`segfix.training.train.train_chain`).

    Attributes:
        stages: one recipe per run; from the second on, ``init`` is the previous run's model.
        settings_of: the bundled model whose inference and decision settings the final model takes (chosen once
            by the tuning runs its card describes), or None to keep the last run's.
    """

    stages: tuple[TrainRecipe, ...]
    settings_of: str | None = None


_CAMVID_FINE_TUNE = dict(lr=0.01, class_balance=0.5)
RECIPE_CHAINS: dict[str, RecipeChain] = {
    # The recommended model from ImageNet weights: the four runs of its card (77 + 116 + 114 + about 180 min on a
    # 2-core AMD EPYC with AVX512-BF16), every 10th training image held out as they were, then v5's settings.
    "camvid-lite0-v5": RecipeChain(
        stages=(
            RECIPES["camvid-cpu"],
            RECIPES["camvid-cpu"].replace(
                iterations=1700, scale_range=(0.5, 2.0), seed=1, checkpoint_every=200, **_CAMVID_FINE_TUNE
            ),
            RECIPES["camvid-cpu"].replace(
                iterations=1400, scale_range=(1.0, 2.5), seed=2, checkpoint_every=250, **_CAMVID_FINE_TUNE
            ),
            RECIPES["camvid-cpu"].replace(
                iterations=2400,
                scale_range=(1.0, 2.5),
                seed=3,
                checkpoint_every=300,
                copy_paste=0.5,
                paste_classes=(2, 6, 9, 10),
                **_CAMVID_FINE_TUNE,
            ),
        ),
        settings_of="camvid-lite0-v5",
    ),
}
# v5's weights (the same four runs) with v6's and v7's settings (their cards say how they were chosen).
RECIPE_CHAINS["camvid-lite0-v6"] = RecipeChain(RECIPE_CHAINS["camvid-lite0-v5"].stages, settings_of="camvid-lite0-v6")
RECIPE_CHAINS["camvid-lite0-v7"] = RecipeChain(RECIPE_CHAINS["camvid-lite0-v5"].stages, settings_of="camvid-lite0-v7")
"""Named chains of recipes: ``segfix train --recipe NAME`` runs every stage, resumably (plain data)."""


SEARCH_ARGUMENTS = {
    "boundary_threshold": "thresholds",
    "min_direction_confidence": "confidences",
    "min_vote_share": "vote_shares",
    "semantic_scale": "scales",
    "iterations": "iterations",
    "direction_vote": "votes",
    "flip_tta": "flips",
    "min_short_side": "min_short_sides",
    "thin_guard": "thin_guards",
    "max_edge_distance": "edge_distances",
}
"""Each searchable setting and the :func:`select_settings` argument holding its candidates (``thin_guard``
stands for the guard's radius and its classes together)."""

TUNED_MIN_SHORT_SIDES = (0, 540, 720)
"""Input sizes tried: on small frames (CamVid's 360 rows) thin structures gain from upscaled inference."""

TUNED_THIN_GUARDS = (0, 1, 2, 3, 4)
"""Thin-part guard radii ``segfix tune`` tries by default."""

TUNED_EDGE_DISTANCES = (0, 1, 2, 3, 4)
"""``max_edge_distance`` values ``segfix tune`` tries by default (0: no limit)."""

TRAIN_EDGE_DISTANCES = (0,)
"""``segfix train --holdout`` keeps refinement unlimited: the stand-in coarse maps it refines are blocky, their
errors as far from their edges as the block is wide, which says nothing about a real network's."""

TRAIN_THIN_GUARDS = (0, 1, 2)
"""The narrower grid of the search that ends ``segfix train --holdout``: it refines stand-ins, whose blocky
segments tell little about thin parts, and the wider grid took 22 min on CamVid."""
