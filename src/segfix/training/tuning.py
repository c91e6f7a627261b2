"""Choosing a model's decision and inference settings on held-out labelled images.

:func:`select_settings` refines coarse predictions of held-out images with every candidate setting and
:func:`choose_row` takes the cheapest of those close to the best gain. The coarse predictions are best a real
segmentation network's (``coarse``: the model to be refined, or any network that never saw those images):
how much to move depends on how a network errs. Without them, :func:`coarse_proxy` stands in for one. Settings
are built as values (``model.with_settings``, :class:`segfix.hub.settings.DecisionSettings`): the model given is
never changed.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..hub.settings import Preprocessing
from ..metrics.accumulators import SegmentationMetrics
from ..metrics.functional import class_iou, confusion_matrix
from ..ops.thin import thin_classes
from ..prediction.decision import decide
from ..prediction.labels import LabelSpace
from ..prediction.refinement import pooled_thin_classes, refine_labels_by_steps
from ..prediction.segfix_model import SegFix
from .recipes import SEARCH_ARGUMENTS

__all__ = ["choose_row", "coarse_proxy", "pixel_budget", "select_settings"]

COST_MARGIN = 0.05
"""mIoU points a cheaper setting may trail the best one by and still be chosen by :func:`select_settings`."""

TUNED_KEYS = (
    "boundary_threshold",
    "min_direction_confidence",
    "min_vote_share",
    "semantic_scale",
    "iterations",
    "direction_vote",
    "flip_tta",
    "min_short_side",
    "thin_guard",
    "thin_guard_classes",
    "max_edge_distance",
)
"""The settings :func:`select_settings` chooses (flat names, see :data:`segfix.hub.settings.FLAT_NAMES`)."""


def kept_grids(model: SegFix, search: Iterable[str]) -> dict[str, tuple]:
    """:func:`select_settings` arguments that pin every setting outside ``search`` to ``model``'s own value, so
    that only the settings in ``search`` (names of :data:`SEARCH_ARGUMENTS`) are chosen.

    Raises:
        ValueError: a name that is not searchable.
    """
    search = set(search)
    unknown = sorted(search - set(SEARCH_ARGUMENTS))
    if unknown:
        raise ValueError(f"search: expected names among {list(SEARCH_ARGUMENTS)}, got {unknown}")
    grids = {argument: (model.settings.get(name),) for name, argument in SEARCH_ARGUMENTS.items()}
    decision = model.settings.decision
    grids["thin_guards"] = ((decision.thin_guard, decision.thin_guard_classes),)  # the radius with its own classes
    return {argument: grids[argument] for name, argument in SEARCH_ARGUMENTS.items() if name not in search}


def coarse_proxy(label: np.ndarray, num_classes: int, ignore_index: int, stride: int = 8) -> np.ndarray:
    """A stand-in for a segmentation network's output: ``label`` seen through a stride-``stride`` model
    (majority vote per block, bilinear upsampling of the one-hot votes, argmax)."""
    h, w = label.shape
    lab = torch.from_numpy(np.where(label == ignore_index, num_classes, label).astype(np.int64))
    one_hot = F.one_hot(lab, num_classes + 1).permute(2, 0, 1)[None].float()
    votes = F.avg_pool2d(one_hot, stride, ceil_mode=True)[:, :num_classes]
    up = F.interpolate(votes, size=(h, w), mode="bilinear", align_corners=False)
    return up[0].argmax(0).numpy().astype(label.dtype)


def _metrics(dataset) -> SegmentationMetrics:
    return SegmentationMetrics(
        dataset.num_classes, ignore_index=dataset.ignore_index, tolerances=(1,), boundary_iou_dilation=None
    )


@torch.inference_mode()
def select_settings(
    model: SegFix,
    dataset,
    *,
    scales: Sequence[int] = (1, 2),
    iterations: Sequence[int] = (1, 2, 3, 4, 5),
    thresholds: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5),
    confidences: Sequence[float] = (0.0, 0.5),
    vote_shares: Sequence[float] = (0.0, 0.5),
    votes: Sequence[bool] = (False, True),
    flips: Sequence[bool] = (False, True),
    min_short_sides: Sequence[int] = (0,),
    thin_guards: Sequence[int | tuple[int, tuple[int, ...] | None]] = (0,),
    edge_distances: Sequence[int] = (0,),
    stride: int = 8,
    coarse: Mapping[str, Sequence[np.ndarray]] | None = None,
    min_class_gain: float | None = 0.0,
) -> tuple[dict, list[dict]]:
    """Choose :data:`TUNED_KEYS` on held-out data by the mIoU gain of refining coarse predictions (ties:
    boundary F-score at 1 px).

    Args:
        confidences: candidate ``min_direction_confidence`` values, tried with the argmax rule; ``vote_shares``:
            candidate ``min_vote_share`` values, tried with the vote (``votes`` says which rules are tried).
        coarse: coarse label maps by the network that made them, one map per sample of ``dataset`` each, in its
            class ids with its ignore label (real networks' predictions: the model to be refined, or any that
            never saw those images). Gains are averaged over the networks, so that the settings do not lean on
            one network's errors. None: :func:`coarse_proxy` of each label with ``stride``.
        min_class_gain: keep only settings under which no class loses more IoU than this on any network's
            maps (None: no guard); see :func:`choose_row`.
        thin_guards: candidate ``thin_guard`` radii (0: off), the thin parts found on each network's own maps;
            or ``(radius, classes)`` pairs, each tried as it is.
            Each radius is tried on the thin parts of every class (``thin_guard_classes`` None) and on those of
            the classes that are thin by nature at that radius alone (:func:`segfix.thin_classes` of the held-out
            labels: poles, not the ragged edges of thick classes).
        edge_distances: candidate ``max_edge_distance`` values (0: no limit), each read on each network's own
            maps. The smallest is part of the grid; the others are tried on the :data:`EDGE_SEARCH_TOP` best
            candidates found with it (a limit only drops moving pixels, so it refines what the rest decided).

    Returns:
        (the chosen settings by flat name, with the :func:`pixel_budget` they were chosen at as
        ``max_network_pixels``; one row per candidate with its ``miou_gain`` and ``f1px_gain``
        (means over the networks), ``worst_class_gain`` and ``gains`` by network). See :func:`choose_row`.
    """
    samples = [dataset[i] for i in range(len(dataset))]
    input_scale = model.settings.preprocessing.input_scale
    # A size that no held-out image is below changes nothing: measuring it again would only repeat size 0.
    min_short_sides = [
        m for m in min_short_sides if m == 0 or any(min(s.image.shape[:2]) * input_scale < m for s in samples)
    ] or [0]
    if coarse is None:
        coarse = {
            "stand-in": [coarse_proxy(s.label, dataset.num_classes, dataset.ignore_index, stride) for s in samples]
        }
    _check_coarse(coarse, samples)
    search = _Search(model, dataset, samples, coarse, flips, min_short_sides)
    # First every candidate by its IoU alone (a confusion matrix per map); then the boundary F-score, which
    # costs twenty times more, only for those close enough to the best to be chosen.
    guards = guard_candidates(thin_guards, [s.label for s in samples], dataset.ignore_index)
    first_edge, *other_edges = sorted(set(edge_distances))
    rows = []
    for threshold, vote, flip, short_side in itertools.product(thresholds, votes, flips, min_short_sides):
        for minimum in vote_shares if vote else confidences:
            decided = {"boundary_threshold": threshold, "direction_vote": vote, "flip_tta": flip}
            decided.update(_minimums(vote, minimum), min_short_side=short_side)
            rows += search.rows(decided, scales, iterations, guards, [first_edge])
    rows += _with_other_edge_limits(search, rows, other_edges, iterations)
    for row in _contenders(rows, min_class_gain):
        row["f1px_gain"] = search.boundary_gain(row)
    chosen = choose_row(rows, samples, input_scale, min_class_gain=min_class_gain)
    budget = pixel_budget([s.image.shape[:2] for s in samples], chosen["min_short_side"], input_scale)
    return {**{k: chosen[k] for k in TUNED_KEYS}, "max_network_pixels": budget}, rows


EDGE_SEARCH_TOP = 3
"""How many of the best candidates (by mIoU gain, step counts together) :func:`select_settings` tries each further
``max_edge_distance`` on: the whole grid at every limit would multiply the search's time by the number of limits."""


def _with_other_edge_limits(search: _Search, rows: Sequence[dict], edges: Sequence[int], iterations) -> list[dict]:
    """Rows of each limit in ``edges`` on the :data:`EDGE_SEARCH_TOP` best candidates of ``rows``."""
    keys = (*_DECIDED_KEYS, "flip_tta", "min_short_side", "semantic_scale", "thin_guard", "thin_guard_classes")
    tried, extra = set(), []
    for row in sorted(rows, key=lambda r: -r["miou_gain"]) if edges else []:
        key = tuple(repr(row[k]) for k in keys)
        if key in tried:
            continue
        tried.add(key)
        decided = {k: row[k] for k in (*_DECIDED_KEYS, "flip_tta", "min_short_side")}
        guard = (row["thin_guard"], row["thin_guard_classes"])
        extra += search.rows(decided, [row["semantic_scale"]], iterations, [guard], edges)
        if len(tried) == EDGE_SEARCH_TOP:
            break
    return extra


def _minimums(vote: bool, minimum: float) -> dict[str, float]:
    """The two minimums of a candidate: the one its rule uses, the other at 0 (unused)."""
    return {"min_direction_confidence": 0.0 if vote else minimum, "min_vote_share": minimum if vote else 0.0}


_DECIDED_KEYS = ("boundary_threshold", "direction_vote", "min_direction_confidence", "min_vote_share")


class _Search:
    """The network's outputs for each input size and flip, computed once, and the rows of every step count."""

    def __init__(self, model: SegFix, dataset, samples: Sequence, coarse, flips, min_short_sides) -> None:
        self.model, self.scorer = model, _Scorer(dataset, samples, coarse)
        self.coarse = coarse
        self.outputs = {
            (flip, side): [
                model.with_settings(flip_tta=flip, min_short_side=side).network_outputs(s.image) for s in samples
            ]
            for flip, side in itertools.product(flips, min_short_sides)
        }

    def fields(self, row: Mapping[str, Any]) -> list:
        decision = self.model.settings.replace(**{k: row[k] for k in _DECIDED_KEYS}).decision
        return [decide(out, decision) for out in self.outputs[row["flip_tta"], row["min_short_side"]]]

    def rows(
        self, decided: dict, scales: Sequence[int], iterations: Sequence[int], guards: Sequence, edges: Sequence[int]
    ) -> list[dict]:
        fields = self.fields(decided)
        steps = sorted(set(iterations))
        rows = []
        for scale, guard, edge in itertools.product(scales, guards, sorted(set(edges))):
            guarded = [_guarded_field(f, scale, guard[0], guard[1], edge) for f in fields]
            refined = self.scorer.refine_by_steps(guarded, steps)
            for i, count in enumerate(steps):
                row = {**decided, "semantic_scale": scale, "iterations": count}
                row.update(thin_guard=guard[0], thin_guard_classes=guard[1], max_edge_distance=edge)
                rows.append({**row, **self.scorer.gains({name: maps[i] for name, maps in refined.items()})})
        return rows

    def boundary_gain(self, row: Mapping[str, Any]) -> float:
        limits = (row["semantic_scale"], row["thin_guard"], row["thin_guard_classes"], row["max_edge_distance"])
        guarded = [_guarded_field(f, *limits) for f in self.fields(row)]
        refined = self.scorer.refine_by_steps(guarded, [row["iterations"]])
        return self.scorer.boundary_gain({name: maps[0] for name, maps in refined.items()})


def _guarded_field(field, scale: int, thin_guard: int, classes, max_edge_distance: int) -> Any:
    """A decided field with a candidate's scale, thin-part guard and limit on the distance from edges (the steps
    are set by the scorer)."""
    changes = dict(thin_guard=thin_guard, thin_guard_classes=classes, max_edge_distance=max_edge_distance)
    return dataclasses.replace(field.with_steps(scale=scale), **changes)


def pixel_budget(sizes: Sequence[tuple[int, int]], min_short_side: int, input_scale: float = 1.0) -> int:
    """The most pixels the network saw on any image of ``sizes`` (H, W) at these size settings.

    Saved as ``max_network_pixels``, it brings larger frames down to the scale the settings were chosen at:
    their objects then look to the network as they did on the held-out images, and the cost stays bounded.
    """
    size = Preprocessing(input_scale=input_scale, min_short_side=min_short_side)
    factors = [size.network_scale((h, w)) for h, w in sizes]
    return max(round(h * f) * round(w * f) for (h, w), f in zip(sizes, factors))


class _Scorer:
    """Gains of refined maps against each network's coarse maps of the held-out samples."""

    def __init__(self, dataset, samples: Sequence, coarse: Mapping[str, Sequence[np.ndarray]]) -> None:
        self.dataset, self.samples, self.coarse = dataset, samples, coarse
        self.before = {name: self._iou(maps) for name, maps in coarse.items()}
        self.before_f: dict | None = None
        self._thin: dict[tuple, tuple[int, ...]] = {}

    def refine_by_steps(self, fields: Sequence, steps: Sequence[int]) -> dict[str, list[list[np.ndarray]]]:
        """Each network's maps refined by the fields (one per sample) at each count of ``steps``:
        ``{network: [maps at steps[0], maps at steps[1], ...]}``. The ``"auto"`` thin classes are each network's
        own, pooled over its maps (as a folder job pools a folder's)."""
        space = LabelSpace(ignore_index=self.dataset.ignore_index)
        refined = {}
        for name, maps in self.coarse.items():
            auto = bool(fields) and fields[0].thin_guard > 0 and isinstance(fields[0].thin_guard_classes, str)
            pooled = self._pooled(name, fields[0].thin_guard) if auto else None  # fixed classes need no pool
            per_sample = [
                refine_labels_by_steps(f, m, steps, label_space=space, pooled=pooled) for f, m in zip(fields, maps)
            ]
            refined[name] = [list(maps_at) for maps_at in zip(*per_sample)]
        return refined

    def _pooled(self, name: str, radius: int) -> tuple[int, ...]:
        key = (name, radius)
        if key not in self._thin:
            space = LabelSpace(ignore_index=self.dataset.ignore_index)
            self._thin[key] = pooled_thin_classes(self.coarse[name], radius, label_space=space)
        return self._thin[key]

    def _iou(self, maps: Sequence[np.ndarray]) -> np.ndarray:
        n, ignore = self.dataset.num_classes, self.dataset.ignore_index
        confusion = np.zeros((n, n + 1), np.int64)
        for m, s in zip(maps, self.samples):
            confusion += confusion_matrix(m, s.label, n, ignore_index=ignore)
        return class_iou(confusion)

    def gains(self, refined: Mapping[str, Sequence[np.ndarray]]) -> dict:
        """Mean mIoU gain over the networks, the worst class's IoU change on any, and the gain by network."""
        gains, worst = {}, []
        for name, maps in refined.items():
            after, before = self._iou(maps), self.before[name]
            gains[name] = float(np.nanmean(after) - np.nanmean(before)) * 100  # the change of the mIoU
            worst.append(float(np.nanmin(after - before)) * 100)
        mean = float(np.mean(list(gains.values())))
        return {"miou_gain": mean, "f1px_gain": None, "worst_class_gain": min(worst), "gains": gains}

    def boundary_gain(self, refined: Mapping[str, Sequence[np.ndarray]]) -> float:
        """Mean boundary F@1px gain over the networks."""
        if self.before_f is None:
            self.before_f = {name: _scores(self.dataset, self.samples, maps) for name, maps in self.coarse.items()}
        gains = []
        for name, maps in refined.items():
            after = _scores(self.dataset, self.samples, maps)
            gains.append((after.mean_boundary_f[1] - self.before_f[name].mean_boundary_f[1]) * 100)
        return float(np.mean(gains))


def guard_candidates(
    radii: Sequence[int | tuple[int, tuple[int, ...] | None]], labels: Sequence[np.ndarray], ignore_index: int | None
) -> list[tuple[int, tuple[int, ...] | None]]:
    """The thin-part guards to try, as ``(thin_guard, thin_guard_classes)``: off; then each radius on every
    class, and on the classes that are thin by nature at it (:func:`segfix.thin_classes` of the ground-truth
    ``labels``) where there are some and they are not every class. A pair among ``radii`` is tried as it is."""
    pairs = [(int(r[0]), r[1]) for r in radii if isinstance(r, tuple)]
    plain = [int(r) for r in radii if not isinstance(r, tuple)]
    guards: list[tuple[int, tuple[int, ...] | None]] = [(0, None)] if 0 in plain else []
    # a pair's classes: None (every class), "auto" (each network's own thin classes, pooled over its maps) or ids
    guards += [(r, None if r == 0 or classes is None else classes if isinstance(classes, str) else tuple(classes))
               for r, classes in pairs]  # fmt: skip
    present = {int(c) for label in labels for c in np.unique(label) if c != ignore_index}
    for radius in sorted(r for r in set(plain) if r):
        guards.append((radius, None))
        thin = thin_classes(labels, radius, ignore_index=ignore_index)
        if thin and set(thin) != present:
            guards.append((radius, thin))
    return guards


def _contenders(rows: Sequence[dict], min_class_gain: float | None, margin: float = COST_MARGIN) -> list[dict]:
    """The rows :func:`choose_row` picks among: those passing the class guard, within ``margin`` of the best."""
    rows = _guarded(rows, min_class_gain)
    best = max(r["miou_gain"] for r in rows)
    return [r for r in rows if r["miou_gain"] >= best - margin]


def _guarded(rows: Sequence[dict], min_class_gain: float | None) -> list[dict]:
    """The rows under which no class loses more IoU than ``min_class_gain`` (else those with the best worst
    class); all rows without a guard."""
    if min_class_gain is None or not rows or "worst_class_gain" not in rows[0]:
        return list(rows)
    safe = [r for r in rows if r["worst_class_gain"] >= min_class_gain]
    best_worst = max(r["worst_class_gain"] for r in rows)
    return safe or [r for r in rows if r["worst_class_gain"] == best_worst]


def _check_coarse(coarse: Mapping[str, Sequence[np.ndarray]], samples: Sequence) -> None:
    if not coarse:
        raise ValueError("coarse: expected the maps of at least one network, got none")
    for name, maps in coarse.items():
        if len(maps) != len(samples):
            raise ValueError(f"coarse[{name!r}]: expected one map per held-out image ({len(samples)}), got {len(maps)}")
        for sample, proxy in zip(samples, maps):
            if proxy.shape != sample.label.shape:
                raise ValueError(
                    f"coarse[{name!r}] map of {sample.name}: expected the label's size {sample.label.shape}, "
                    f"got {proxy.shape}"
                )


def _scores(dataset, samples: Sequence, maps: Sequence[np.ndarray]):
    metrics = _metrics(dataset)
    for sample, label_map in zip(samples, maps):
        metrics.update(label_map, sample.label)
    return metrics.compute()


def choose_row(
    rows: Sequence[dict],
    samples: Sequence,
    input_scale: float = 1.0,
    margin: float = COST_MARGIN,
    min_class_gain: float | None = None,
) -> dict:
    """The cheapest of the rows whose mIoU gain is within ``margin`` points of the best (then one without the
    thin-part guard, then the larger gain, then boundary F-score). Cost counts network passes: flip averaging
    doubles it, upscaling by ``f`` costs ``f**2``, so a flip, a larger size or the guard is kept only where it
    pays on the held-out images.

    With ``min_class_gain``, only rows whose ``worst_class_gain`` (the largest IoU loss of any class) is at
    least that compete: refinement must not buy its mean by breaking a class (thin ones first fall). Where no
    row passes, the rows with the best worst class do."""
    rows = _guarded(rows, min_class_gain)
    best_gain = max(r["miou_gain"] for r in rows)
    shorts = [min(s.image.shape[:2]) for s in samples]

    def cost(row: dict) -> float:
        factors = [
            max(input_scale, row["min_short_side"] / short) if row["min_short_side"] else input_scale
            for short in shorts
        ]
        return (2 if row["flip_tta"] else 1) * sum(min(f, 4.0) ** 2 for f in factors)

    close = [r for r in rows if r["miou_gain"] >= best_gain - margin]
    # The thin-part guard is no part of the paper's method: like a doubled cost, it is kept only where no
    # setting without it comes within the margin.
    return min(
        close,
        key=lambda r: (round(cost(r), 6), bool(r.get("thin_guard")), -r["miou_gain"], -(r["f1px_gain"] or 0.0)),
    )
