"""CamVid val: ESPNet's predictions before and after SegFix, and with oracle offsets (the upper bound).

Reads the research-use CamVid copy in ../shared/data/camvid (never shipped). Prints per-class IoU and boundary
F-score at 1/2/3 px, before and after, and the means for every variant.

Run: ``python benchmarks/camvid_val.py [--model camvid-lite0-v4] [--root ../shared/data/camvid]``. With
``--holdout-coarse DIR`` it reports on the training images ``segfix train --holdout 10`` keeps out instead
(``--holdout 0001TP``: those of one drive),
refining the predictions in DIR (e.g. those of ``tools/train_coarse_net.py``): the numbers settings may be
chosen on, where val is only reported. The
precision ``'auto'`` picks bf16 where it is native (CUDA, or a CPU with AVX512-BF16/AMX), and then an fp32
variant shows what it costs; elsewhere auto is fp32 (bf16 would be emulated, ten times slower).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import segfix  # noqa: E402
import segfix.data.readers  # noqa: E402
from segfix.data.files import read_image, read_label  # noqa: E402
from segfix.data.readers import CAMVID_CLASSES  # noqa: E402
from segfix.metrics import SegmentationMetrics  # noqa: E402
from segfix.model.precision import resolve_precision  # noqa: E402

from _common import machine, print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=segfix.list_models()[0], help="default: the recommended bundled model")
    parser.add_argument("--root", default=str(ROOT))
    parser.add_argument("--limit", type=int, help="first N images only")
    parser.add_argument("--torch-compile", action="store_true", help="every variant through torch.compile")
    parser.add_argument("--holdout-coarse", metavar="DIR", help="held-out training images, refining DIR/<name>.png")
    parser.add_argument(
        "--holdout",
        default="10",
        metavar="N|PREFIX",
        help="with --holdout-coarse: the images 'segfix train --holdout' kept out (every N-th, or one drive: 0001TP)",
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="model settings to change")
    args = parser.parse_args()
    root = Path(args.root)
    if not (root / "valannot").is_dir():
        raise SystemExit(f"CamVid not found at {root}")
    if args.holdout_coarse:
        _, held = segfix.data.readers.CamVid(root, "train").split(segfix.data.readers.parse_holdout(args.holdout))
        names = [image.name for image, _ in held.pairs][: args.limit]
        images, labels, coarse_dir = root / "train", root / "trainannot", Path(args.holdout_coarse)
    else:
        names = sorted(p.name for p in (root / "valannot").glob("*.png"))[: args.limit]
        images, labels, coarse_dir = root / "val", root / "valannot", root / "val_espnet"
    extra = {"torch_compile": True} if args.torch_compile else {}
    extra.update({k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)})
    model = segfix.SegFix.from_pretrained(args.model, **extra)
    per_image = None
    if model.settings.decision.thin_guard and model.settings.decision.thin_guard_classes == "auto":
        # As `segfix refine` does for a folder: the thin classes pooled over all the coarse maps refined.
        pooled = segfix.thin_classes((read_label(coarse_dir / n) for n in names), model.settings.decision.thin_guard)
        per_image, model = model, model.with_settings(thin_guard_classes=pooled)
    what = f"held-out train, {coarse_dir} predictions" if args.holdout_coarse else "val, ESPNet predictions"
    print(f"# CamVid {what} ({len(names)} images), model {args.model!r}; {machine()}")
    print(f"# command: python benchmarks/camvid_val.py {' '.join(sys.argv[1:])}")
    decision, flip = model.settings.decision, model.settings.inference.flip_tta
    print(
        f"# model settings: scale {decision.semantic_scale}, iterations {decision.iterations}, boundary threshold "
        f"{decision.boundary_threshold}, minimum vote share {decision.min_vote_share}, direction vote "
        f"{decision.direction_vote}, flip averaging {flip}, thin-part guard {decision.thin_guard}"
        + (f" (classes {list(classes)})" if (classes := decision.thin_guard_classes) not in (None, "auto") else "")
        + (" found in the coarse maps ('auto', pooled over the folder)" if per_image is not None else "")
    )
    source = "coarse" if args.holdout_coarse else "ESPNet"  # the coarse input's row
    refined_row = f"{source} + SegFix"
    # The same weights with the flip setting turned over (what flip averaging buys for its doubled network
    # cost) and with the paper's rule (argmax direction, one step).
    learned = {
        refined_row: model,
        f"{refined_row}, {'no flip' if flip else 'with flip averaging'}": model.with_settings(flip_tta=not flip),
        f"{refined_row}, argmax rule, one step, no flip": model.with_settings(
            direction_vote=False, iterations=1, flip_tta=False, thin_guard=0
        ),
    }
    if model.settings.decision.thin_guard:  # what the guard changes, all else as shipped
        learned[f"{refined_row}, no thin-part guard"] = model.with_settings(thin_guard=0)
    if per_image is not None:  # 'auto' read from each map alone, as SegFix.refine of one image does
        learned[f"{refined_row}, thin classes of each map alone"] = per_image
    if resolve_precision("auto", model.device) == "bf16":
        # 'auto' runs bf16 here: fp32 beside it shows what the faster precision costs
        learned[f"{refined_row}, fp32"] = model.with_settings(precision="fp32")
    variants = [source, *learned, "oracle, scale 1", "oracle, scale 2"]
    metrics = {v: SegmentationMetrics(11, ignore_index=255, class_names=CAMVID_CLASSES) for v in variants}
    seconds = dict.fromkeys(learned, 0.0)
    agree, counted = np.zeros(11, np.int64), np.zeros(11, np.int64)
    for name in names:
        gt = read_label(labels / name).astype(np.int64)
        gt[gt == 11] = 255
        coarse = read_label(coarse_dir / name)
        image = read_image(images / name)
        metrics[source].update(coarse, gt)
        for variant, refiner in learned.items():
            start = time.perf_counter()
            refined = refiner.refine(image, coarse)
            seconds[variant] += time.perf_counter() - start
            metrics[variant].update(refined, gt)
        targets = segfix.boundary_targets(gt, border="replicate", zero_gradient="no_direction")
        prediction = model.predict(image)
        both = targets.boundary & prediction.boundary & (gt != 255) & (targets.direction >= 0)
        classes = gt[both]
        counted += np.bincount(classes, minlength=11)[:11]
        agree += np.bincount(classes[prediction.direction[both] == targets.direction[both]], minlength=11)[:11]
        oracle = segfix.boundary_targets(gt).offsets()
        for scale in (1, 2):
            metrics[f"oracle, scale {scale}"].update(segfix.refine_semantic(coarse, oracle, scale=scale), gt)
    results = {v: m.compute() for v, m in metrics.items()}
    base = results[source]
    rows = []
    for v, r in results.items():
        f = r.mean_boundary_f
        rows.append(
            [
                v,
                f"{r.miou * 100:.2f}",
                f"{(r.miou - base.miou) * 100:+.2f}",
                f"{f[1] * 100:.2f}",
                f"{(f[1] - base.mean_boundary_f[1]) * 100:+.2f}",
                f"{f[2] * 100:.2f}",
                f"{f[3] * 100:.2f}",
                f"{r.mean_boundary_iou * 100:.2f}",
            ]
        )
    print_table("means", ["predictions", "mIoU", "Δ", "F@1px", "Δ", "F@2px", "F@3px", "BIoU"], rows)
    after = results[refined_row]
    per_class = []
    for i, name in enumerate(CAMVID_CLASSES):
        row = [name]
        for _column, values in (
            ("IoU", (base.iou, after.iou)),
            *((f"F@{t}", (base.boundary_f[t], after.boundary_f[t])) for t in (1, 2, 3)),
        ):
            b, a = values[0][i] * 100, values[1][i] * 100
            row += [f"{b:.2f}", f"{a:.2f} ({a - b:+.2f})"]
        per_class.append(row)
    print_table(
        f"per class: {source} -> {refined_row}",
        ["class", "IoU", "IoU after", "F@1", "F@1 after", "F@2", "F@2 after", "F@3", "F@3 after"],
        per_class,
    )
    share = agree / np.maximum(counted, 1)
    print(
        "\ndirection accuracy on pixels that are boundary in both the prediction and the ground truth: "
        f"all {agree.sum() / max(counted.sum(), 1):.1%}, pole {share[2]:.1%}, sign {share[6]:.1%}; per class "
        + ", ".join(f"{n} {a:.1%}" for n, a in zip(CAMVID_CLASSES, share))
    )
    worse = [CAMVID_CLASSES[i] for i in range(11) if after.iou[i] < base.iou[i]]
    print(f"\nclasses whose IoU fell: {worse or 'none'}")
    print(
        "SegFix.refine per 480x360 image (mean, first call included): "
        + "; ".join(f"{v.removeprefix(source + ' + ')} {t / len(names) * 1e3:.0f} ms" for v, t in seconds.items())
    )


if __name__ == "__main__":
    main()
