"""Instance masks on real Cityscapes frames: Mask R-CNN-like coarse masks before and after ``refine_instances``.

Each ground-truth instance (gtFine instanceIds, ``labelId * 1000 + k``) is coarsened as a Mask R-CNN head draws
it (:func:`segfix.synthetic.roi_head_masks`: its box averaged to 28 x 28 and resampled back, thresholded at
0.5), then every frame's masks are refined with one field (``SegFix.refine_instances``, the argmax rule,
``instance_scale``). Prints mask IoU (pixels pooled over the class's instances, and the mean over instances)
and boundary F at 1/2/3 px per class, before and after, and what offsets from the ground truth give (the oracle).

Run: ``python benchmarks/instances_eval.py [--frames held|tune|all] [--model NAME]`` (research-use data in
../shared/data/cityscapes, never shipped).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from refine_eval import CITYSCAPES_HELD_OUT, CITYSCAPES_TUNE, SHARED  # noqa: E402

import segfix  # noqa: E402
from segfix.data.datasets import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_TO_TRAIN  # noqa: E402
from segfix.data.files import read_image, read_label  # noqa: E402
from segfix.metrics.functional import boundary_fscore_counts, boundary_fscore_from_counts  # noqa: E402
from segfix.synthetic import roi_head_masks  # noqa: E402

from _common import machine, print_table  # noqa: E402

THING_LABEL_IDS = (24, 25, 26, 27, 28, 31, 32, 33)
"""Cityscapes' instance classes by labelId: person, rider, car, truck, bus, train, motorcycle, bicycle."""

TOLERANCES = (1, 2, 3)
MIN_PIXELS = 64
"""Instances smaller than this are left out: their 28 x 28 head output is larger than they are."""


def instances_of(instance_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """gtFine instanceIds ``(H, W)`` -> (masks ``(K, H, W)`` bool, trainId of each) of the thing instances with at
    least :data:`MIN_PIXELS` pixels, in ascending id order."""
    ids, counts = np.unique(instance_ids[instance_ids >= 1000], return_counts=True)
    keep = [(i, int(i) // 1000) for i, n in zip(ids, counts) if n >= MIN_PIXELS and int(i) // 1000 in THING_LABEL_IDS]
    masks = np.stack([instance_ids == i for i, _ in keep]) if keep else np.zeros((0, *instance_ids.shape), bool)
    classes = np.array([CITYSCAPES_LABEL_TO_TRAIN[label] for _, label in keep], np.int64)
    return masks, classes


class InstanceScores:
    """Per class: pooled intersection and union, per-instance IoUs, boundary matching counts."""

    def __init__(self) -> None:
        self.inter = np.zeros(19, np.int64)
        self.union = np.zeros(19, np.int64)
        self.ious: list[list[float]] = [[] for _ in range(19)]
        self.boundary = np.zeros((19, len(TOLERANCES), 4), np.int64)

    def update(self, masks: np.ndarray, truth: np.ndarray, classes: np.ndarray) -> None:
        for mask, gt, c in zip(masks, truth, classes):
            inter, union = int((mask & gt).sum()), int((mask | gt).sum())
            self.inter[c] += inter
            self.union[c] += union
            self.ious[c].append(inter / max(union, 1))
            counts = boundary_fscore_counts(
                mask.astype(np.int64), gt.astype(np.int64), 2, TOLERANCES, ignore_index=None
            )
            self.boundary[c] += counts[1]

    def summary(self) -> dict:
        f = boundary_fscore_from_counts(self.boundary)
        return {
            "pooled_iou": self.inter / np.maximum(self.union, 1),
            "mean_iou": np.array([np.mean(v) if v else np.nan for v in self.ious]),
            "count": np.array([len(v) for v in self.ious]),
            "boundary_f": f,
        }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=segfix.list_models()[0])
    parser.add_argument("--root", default=str(SHARED / "cityscapes"))
    parser.add_argument("--frames", choices=["held", "tune", "all"], default="held")
    parser.add_argument("--limit", type=int, help="first N frames only")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="model settings to change")
    parser.add_argument("--json", metavar="PATH", help="also write the table as JSON (a new file)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not (root / "gtFine").is_dir():
        raise SystemExit(f"Cityscapes not found at {root}")
    names = {"held": CITYSCAPES_HELD_OUT, "tune": CITYSCAPES_TUNE, "all": CITYSCAPES_TUNE + CITYSCAPES_HELD_OUT}
    frames = names[args.frames][: args.limit]
    extra = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    model = segfix.SegFix.from_pretrained(args.model, **extra)
    print(f"# Cityscapes {args.frames} frames ({len(frames)}), model {args.model!r} {extra or ''}; {machine()}")
    decision = model.settings.decision
    print(
        f"# instance decision: scale {decision.instance_scale}, iterations {decision.iterations}, boundary threshold "
        f"{decision.boundary_threshold}"
    )
    rows = {"coarse (28 x 28 head)": InstanceScores(), "SegFix": InstanceScores(), "oracle": InstanceScores()}
    seconds = 0.0
    for name in frames:
        image = read_image(root / "leftImg8bit" / "train" / "aachen" / f"{name}_leftImg8bit.png")
        instance_ids = read_label(root / "gtFine" / "train" / "aachen" / f"{name}_gtFine_instanceIds.png")
        truth, classes = instances_of(instance_ids)
        coarse = roi_head_masks(truth)
        start = time.perf_counter()
        refined = model.refine_instances(image, coarse)
        seconds += time.perf_counter() - start
        offsets = segfix.instance_targets(instance_ids).offsets()  # the original's "instance with stuff" targets
        oracle = segfix.refine_instances(coarse, offsets, scale=model.settings.decision.instance_scale)
        for row, masks in zip(rows.values(), (coarse, refined, oracle)):
            row.update(masks, truth, classes)
    scores = {row: s.summary() for row, s in rows.items()}
    base, after, best = scores.values()
    table = []
    for c in np.flatnonzero(base["count"]):
        cells = [CITYSCAPES_CLASSES[c], str(base["count"][c])]
        for key, scale in (("pooled_iou", 100), ("mean_iou", 100)):
            b, a, o = base[key][c] * scale, after[key][c] * scale, best[key][c] * scale
            cells += [f"{b:.2f}", f"{a:.2f} ({a - b:+.2f})", f"{o:.2f}"]
        for t in range(len(TOLERANCES)):
            b, a, o = (s["boundary_f"][c, t] * 100 for s in (base, after, best))
            cells += [f"{b:.2f}", f"{a:.2f} ({a - b:+.2f})", f"{o:.2f}"]
        table.append(cells)
    header = ["class", "instances"]
    for what in ("IoU", "mean IoU", *(f"F@{t}" for t in TOLERANCES)):
        header += [what, f"{what} SegFix", f"{what} oracle"]
    print_table("instance masks per class (coarse -> SegFix; oracle = offsets from the ground truth)", header, table)
    present = base["count"] > 0
    means = {
        row: (np.mean(s["pooled_iou"][present]), np.nanmean(s["boundary_f"][present, 0])) for row, s in scores.items()
    }
    print(
        "\nmeans over classes: " + "; ".join(f"{r} IoU {i * 100:.2f} F@1 {f * 100:.2f}" for r, (i, f) in means.items())
    )
    print(f"seconds per refine_instances (network included): {seconds / max(len(frames), 1):.3f}")
    out = {
        "frames": len(frames),
        "rows": {
            row: {"pooled_iou": s["pooled_iou"].tolist(), "mean_iou": s["mean_iou"].tolist(),
                  "boundary_f": s["boundary_f"].tolist(), "count": s["count"].tolist()}
            for row, s in scores.items()
        },
    }  # fmt: skip
    if args.json:
        with open(args.json, "x") as f:
            json.dump(out, f, indent=1, default=float)
    return out


if __name__ == "__main__":
    main()
