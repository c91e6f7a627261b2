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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
