"""The ``segfix`` command line. ``main(argv)`` returns the exit code; ``segfix <command> --help`` explains each."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["main"]

_logger = logging.getLogger("segfix")


def _asset(name: str) -> Path:
    return Path(str(resources.files("segfix") / "assets" / name))


def _demo(args: argparse.Namespace) -> int:
    from . import boundary_targets, refine_semantic, viz
    from ._io import read_image, read_label, write_png
    from .metrics import SegmentationMetrics

    image = read_image(_asset("coffee.jpg"))
    reference = read_label(_asset("coffee_reference.png"))
    coarse = read_label(_asset("coffee_coarse.png"))
    num_classes = int(reference.max()) + 1
    start = time.perf_counter()
    targets = boundary_targets(reference, min_pixels=0)
    offsets = targets.offsets()
    refined = refine_semantic(coarse, offsets, scale=args.scale)
    elapsed = time.perf_counter() - start
    source = "offsets from the reference map (the oracle: SegFix's upper bound)"

    scores = {}
    for name, prediction in (("coarse", coarse), ("refined", refined)):
        m = SegmentationMetrics(num_classes, tolerances=(1, 2, 3))
        m.update(prediction, reference)
        scores[name] = m.compute()

    out = Path(args.output)
    sheet = viz.panel(
        [
            image,
            viz.colorize(reference, num_classes),
            viz.colorize(coarse, num_classes),
            viz.overlay_boundary(image, targets.boundary),
            viz.colorize(refined, num_classes),
            viz.error_map(coarse, refined, reference),
        ],
        [
            "image (CC0 photo)",
            "reference labels",
            "coarse prediction",
            "boundary band",
            f"refined (scale {args.scale})",
            "fixed green / broken red / still wrong grey",
        ],
    )
    from ._io import atomic_write

    atomic_write(out / "demo.png", lambda tmp: sheet.save(tmp, format="PNG"))
    write_png(out / "refined.png", refined.astype(np.uint8))

    before, after = scores["coarse"], scores["refined"]
    print(f"segfix demo: refined a {coarse.shape[1]}x{coarse.shape[0]} coarse label map with {source}")
    print(f"  boundary pixels moved: {int((refined != coarse).sum())} of {coarse.size}  ({elapsed * 1e3:.0f} ms)")
    print(f"  {'':10s}{'mIoU':>8s}{'F@1px':>8s}{'F@2px':>8s}{'F@3px':>8s}")
    for label, r in (("coarse", before), ("refined", after)):
        f = r.mean_boundary_f
        print(f"  {label:10s}{r.miou * 100:8.2f}{f[1] * 100:8.2f}{f[2] * 100:8.2f}{f[3] * 100:8.2f}")
    print(f"  wrote {out / 'demo.png'} and {out / 'refined.png'}")
    return 0


def _dataset(spec: str, split: str | None = None):
    """``kind=root`` -> a reader: camvid, cityscapes, ade20k, or folder=IMAGE_GLOB,LABEL_GLOB,NUM_CLASSES."""
    from . import data

    if "=" not in spec:
        raise SystemExit(f"--dataset: expected KIND=ROOT (camvid, cityscapes, ade20k, folder), got {spec!r}")
    kind, root = spec.split("=", 1)
    if kind == "camvid":
        return data.CamVid(root, split or "train")
    if kind == "cityscapes":
        return data.Cityscapes(root, split or "train")
    if kind == "ade20k":
        return data.ADE20K(root, "validation" if split == "val" else (split or "training"))
    if kind == "folder":
        try:
            images, labels, classes = root.split(",")
            return data.FolderPairs(images, labels, int(classes))
        except ValueError:
            raise SystemExit(f"--dataset folder=IMAGE_GLOB,LABEL_GLOB,NUM_CLASSES, got {spec!r}") from None
    raise SystemExit(f"--dataset: unknown kind {kind!r}; expected camvid, cityscapes, ade20k or folder")


def _train(args: argparse.Namespace) -> int:
    import json

    from .model import SegFix
    from .train import RECIPES, select_settings, train

    settings = dict(RECIPES[args.recipe]) if args.recipe else {}
    for key in ("iterations", "batch_size", "crop_size", "lr", "workers", "precision", "optimizer", "seed"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    holdout_every = settings.pop("holdout", 0) if args.holdout is None else args.holdout
    datasets = [_dataset(spec) for spec in args.dataset]
    held_out = None
    if holdout_every:
        datasets[0], held_out = datasets[0].split(holdout_every)
    if args.proportions:
        settings["proportions"] = args.proportions
    output = Path(args.output)
    print(
        f"segfix train: {', '.join(f'{type(d).__name__} ({len(d)} images)' for d in datasets)}"
        f"{f'; {len(held_out)} held out' if held_out is not None else ''} -> {output}"
    )
    final = train(datasets, output, resume=args.resume, **settings)
    if held_out is not None:
        model = SegFix.from_pretrained(final)
        best, rows = select_settings(model, held_out)
        (output / "settings.json").write_text(json.dumps({"chosen": best, "candidates": rows}, indent=1))
        model = SegFix.from_pretrained(final, **best)
        model.save_pretrained(final)
        print(f"  settings chosen on the held-out images: {best}")
    print(f"  model written to {final} (load with SegFix.from_pretrained({str(final)!r}))")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segfix",
        description="SegFix boundary refinement: fix the boundaries of any segmentation model's output.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="refine the bundled example and write a picture of the result",
        description="Refine the bundled example (a CC0 photo with a coarse label map) and "
        "write demo.png (panels) and refined.png into --output.",
    )
    demo.add_argument("--output", default="outputs/demo", help="folder for demo.png and refined.png")
    demo.add_argument("--scale", type=int, default=2, help="offset scale (SegFix uses 2 for semantic maps)")
    demo.set_defaults(func=_demo)

    tr = sub.add_parser(
        "train",
        help="train a SegFix model on one or more datasets",
        description="Train a SegFix offset predictor. Example (the bundled model): segfix train "
        "--recipe camvid-cpu --dataset camvid=../shared/data/camvid --output runs/camvid. "
        "Several --dataset flags mix datasets in each batch (--proportions). Launch "
        "with torchrun for several GPUs or nodes.",
    )
    tr.add_argument(
        "--dataset",
        action="append",
        required=True,
        metavar="KIND=ROOT",
        help="camvid=ROOT, cityscapes=ROOT, ade20k=ROOT or folder=IMAGE_GLOB,LABEL_GLOB,NUM_CLASSES",
    )
    tr.add_argument(
        "--recipe",
        choices=sorted(__import__("segfix.train", fromlist=["RECIPES"]).RECIPES),
        help="named settings (flags below override them)",
    )
    tr.add_argument("--output", required=True, help="run folder (checkpoint.pt, model/, history.jsonl)")
    tr.add_argument("--proportions", type=float, nargs="+", help="share of each dataset per batch, e.g. 0.5 0.5")
    tr.add_argument("--iterations", type=int)
    tr.add_argument("--batch-size", type=int, help="global batch size over all processes")
    tr.add_argument("--crop-size", type=int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--optimizer", choices=["sgd", "adamw"])
    tr.add_argument("--workers", type=int, help="data-loading processes")
    tr.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    tr.add_argument("--seed", type=int)
    tr.add_argument(
        "--holdout",
        type=int,
        help="hold out every N-th image of the first dataset to choose inference settings (0: none)",
    )
    tr.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    tr.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
