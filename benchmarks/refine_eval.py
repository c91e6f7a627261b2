"""A real network's predictions before and after SegFix, on any labelled dataset, per class, with the oracle.

One script for every domain the project is judged on (the data are research-use copies under ../shared/data,
never shipped):

* ``camvid-val``: CamVid val (101 frames, 480x360) and ESPNet's predictions;
* ``camvid-holdout``: the CamVid training frames ``segfix train --holdout`` keeps out (``--holdout 10`` or a
  drive, ``--holdout 0001TP``), refining the predictions in ``--holdout-coarse DIR``: what settings may be
  chosen on;
* ``cityscapes-held``: the 15 Cityscapes frames held out for reporting (:data:`CITYSCAPES_HELD_OUT`, 2048x1024)
  and the distilled ESPNet's predictions; never trained or tuned on;
* ``cityscapes-tune``: the other 35 Cityscapes frames: what training and tuning may use;
* ``example``: the bundled photo (600x400, :func:`segfix.load_example`), which needs no data.

Rows: the coarse input; SegFix as users call it, ``model.refine(image, label_map)`` one image at a time; the same
with the ``"auto"`` thin classes pooled over the whole set (as ``segfix refine`` pools a folder); optional levers
(``--levers``: flip averaging, no guard, the paper's argmax rule, fp32); offsets from the ground truth (the
oracle, SegFix's upper bound) at scale 1 and 2. Then per class for the one-image-at-a-time row, direction
accuracy per class, and the seconds per ``refine``.

Run::

    python benchmarks/refine_eval.py                                  # CamVid val, the recommended model
    python benchmarks/refine_eval.py --data cityscapes-held           # the held-out Cityscapes frames
    python benchmarks/refine_eval.py --data camvid-val cityscapes-held example --json results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import segfix  # noqa: E402
import segfix.data.datasets  # noqa: E402
from segfix.data.datasets import CAMVID_CLASSES, CITYSCAPES_CLASSES  # noqa: E402
from segfix.data.files import read_image, read_label  # noqa: E402
from segfix.data.registry import encode_labels  # noqa: E402
from segfix.metrics import SegmentationMetrics  # noqa: E402
from segfix.network.precision import resolve_precision

from _common import machine, print_table  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

CITYSCAPES_HELD_OUT = tuple(f"aachen_{i:06d}_000019" for i in range(35, 50))
"""The Cityscapes frames kept for reporting: aachen 35..49, a block of the city, as a drive is held out whole.
Training and tuning use the other 35 (:data:`CITYSCAPES_TUNE`)."""

CITYSCAPES_TUNE = tuple(f"aachen_{i:06d}_000019" for i in range(35))
"""The Cityscapes frames training and tuning may use."""


@dataclass
class Frame:
    """One labelled frame: ``load()`` -> (RGB image, coarse class ids, ground-truth class ids with 255 = ignore)."""

    name: str
    load: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class Benchmark:
    """A labelled set with a real network's predictions."""

    name: str
    class_names: tuple[str, ...]
    frames: list[Frame]
    thin_classes: dict[str, int]  # the classes reported in the summary line, by name

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def camvid(root: Path, split: str, *, holdout: str = "10", holdout_coarse: str | None = None) -> Benchmark:
    """CamVid val with ESPNet's predictions, or held-out training frames with the predictions in a folder."""
    if not (root / "valannot").is_dir():
        raise SystemExit(f"CamVid not found at {root}")
    if split == "holdout":
        if holdout_coarse is None:
            raise SystemExit("camvid-holdout: expected --holdout-coarse DIR (the predictions of the held-out frames)")
        reader = segfix.data.datasets.CamVid(root, "train")
        _, held = reader.split(segfix.data.datasets.parse_holdout(holdout))
        names = [image.name for image, _ in held.pairs]
        images, labels, coarse = root / "train", root / "trainannot", Path(holdout_coarse)
    else:
        names = sorted(p.name for p in (root / "valannot").glob("*.png"))
        images, labels, coarse = root / "val", root / "valannot", root / "val_espnet"

    def loader(name: str):
        def load():
            gt = read_label(labels / name).astype(np.int64)
            gt[gt == 11] = 255  # void
            return read_image(images / name), read_label(coarse / name), gt

        return load

    title = f"CamVid {split}" + (f" ({holdout}, {coarse})" if split == "holdout" else " (ESPNet)")
    frames = [Frame(n, loader(n)) for n in names]
    return Benchmark(title, tuple(CAMVID_CLASSES), frames, {"pole": 2, "sign": 6})


def cityscapes(root: Path, names: tuple[str, ...], title: str) -> Benchmark:
    """Cityscapes frames (gtFine labelIds -> trainIds) with the distilled ESPNet's trainId predictions."""
    city = root / "leftImg8bit" / "train" / "aachen"
    if not city.is_dir():
        raise SystemExit(f"Cityscapes not found at {root}")

    def loader(name: str):
        def load():
            stored = read_label(root / "gtFine" / "train" / "aachen" / f"{name}_gtFine_labelIds.png")
            coarse = read_label(root / "coarse_skd_espnet" / "train" / "aachen" / f"{name}_leftImg8bit.png")
            return read_image(city / f"{name}_leftImg8bit.png"), coarse, encode_labels(stored, "cityscapes-labelid")

        return load

    thin = {"pole": 5, "traffic light": 6, "traffic sign": 7}
    return Benchmark(title, tuple(CITYSCAPES_CLASSES), [Frame(n, loader(n)) for n in names], thin)


def example() -> Benchmark:
    """The bundled photo: a blocky coarse map and a colour-clustering reference (no class is ignored)."""
    shipped = segfix.load_example()
    names = tuple(f"class {i}" for i in range(shipped.num_classes))
    frame = Frame("coffee", lambda: (shipped.image, shipped.coarse, shipped.reference.astype(np.int64)))
    return Benchmark("the bundled photo (coffee, 600x400)", names, [frame], {})


def benchmark_of(data: str, args: argparse.Namespace) -> Benchmark:
    if data == "example":
        return example()
    if data in ("camvid-val", "camvid-holdout"):
        root = Path(args.camvid_root)
        return camvid(root, data.split("-")[1], holdout=args.holdout, holdout_coarse=args.holdout_coarse)
    if data in ("cityscapes-held", "cityscapes-tune"):
        held = data == "cityscapes-held"
        names = CITYSCAPES_HELD_OUT if held else CITYSCAPES_TUNE
        return cityscapes(Path(args.cityscapes_root), names, f"Cityscapes {'held-out' if held else 'tune'} (ESPNet)")
    raise SystemExit(
        f"--data: expected camvid-val, camvid-holdout, cityscapes-held, cityscapes-tune or example, got {data!r}"
    )


def frames_of(bench: Benchmark, limit: int | None) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    for frame in bench.frames[:limit]:
        yield (frame.name, *frame.load())


def variants_of(model: segfix.SegFix, bench: Benchmark, levers: bool, limit: int | None) -> dict[str, segfix.SegFix]:
    """The refiners compared: as users call it, pooled thin classes, and (``levers``) what each setting buys."""
    shipped = "SegFix.refine, one image at a time"
    variants = {shipped: model}
    decision = model.settings.decision
    if decision.thin_guard and decision.thin_guard_classes == "auto":
        # As `segfix refine` does for a folder: the thin classes pooled over every coarse map refined.
        maps = (coarse for _, _, coarse, _ in frames_of(bench, limit))
        pooled = segfix.thin_classes(maps, decision.thin_guard)
        variants["thin classes pooled over the set"] = model.with_settings(thin_guard_classes=pooled)
    if levers:
        flip = model.settings.inference.flip_tta
        variants["no flip" if flip else "with flip averaging"] = model.with_settings(flip_tta=not flip)
        if decision.thin_guard:
            variants["no thin-part guard"] = model.with_settings(thin_guard=0)
        paper = dict(direction_vote=False, iterations=1, flip_tta=False, thin_guard=0)
        variants["argmax rule, one step, no flip"] = model.with_settings(**paper)
        if resolve_precision("auto", model.device) == "bf16":
            variants["fp32"] = model.with_settings(precision="fp32")
    return variants


def direction_hits(model: segfix.SegFix, image, gt, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: (pixels that are boundary in both the prediction and the ground truth, of them with the right
    direction)."""
    targets = segfix.boundary_targets(gt, border="replicate", zero_gradient="no_direction")
    prediction = model.predict(image)
    both = targets.boundary & prediction.boundary & (gt != 255) & (targets.direction >= 0)
    classes = gt[both]
    right = classes[prediction.direction[both] == targets.direction[both]]
    return np.bincount(classes, minlength=num_classes)[:num_classes], np.bincount(right, minlength=num_classes)[
        :num_classes
    ]


def evaluate(bench: Benchmark, model: segfix.SegFix, *, levers: bool, limit: int | None) -> dict:
    variants = variants_of(model, bench, levers, limit)
    rows = ["coarse", *variants, "oracle, scale 1", "oracle, scale 2"]
    metrics = {r: SegmentationMetrics(bench.num_classes, ignore_index=255, class_names=bench.class_names) for r in rows}
    seconds = dict.fromkeys(variants, 0.0)
    counted = np.zeros(bench.num_classes, np.int64)
    right = np.zeros(bench.num_classes, np.int64)
    count = 0
    for _, image, coarse, gt in frames_of(bench, limit):
        count += 1
        metrics["coarse"].update(coarse, gt)
        for row, refiner in variants.items():
            start = time.perf_counter()
            refined = refiner.refine(image, coarse)
            seconds[row] += time.perf_counter() - start
            metrics[row].update(refined, gt)
        both, hits = direction_hits(model, image, gt, bench.num_classes)
        counted += both
        right += hits
        oracle = segfix.boundary_targets(gt).offsets()
        for scale in (1, 2):
            metrics[f"oracle, scale {scale}"].update(segfix.refine_semantic(coarse, oracle, scale=scale), gt)
    return {
        "results": {r: m.compute() for r, m in metrics.items()},
        "seconds": {r: s / max(count, 1) for r, s in seconds.items()},
        "direction_accuracy": right / np.maximum(counted, 1),
        "direction_accuracy_all": float(right.sum() / max(counted.sum(), 1)),
        "frames": count,
        "size": image.shape[:2] if count else None,
    }


def report(bench: Benchmark, outcome: dict) -> dict:
    """Print the tables; return them as JSON-ready data."""
    results, base = outcome["results"], outcome["results"]["coarse"]
    means = []
    for row, r in results.items():
        f = r.mean_boundary_f
        means.append(
            [
                row,
                f"{r.miou * 100:.2f}",
                f"{(r.miou - base.miou) * 100:+.2f}",
                f"{f[1] * 100:.2f}",
                f"{(f[1] - base.mean_boundary_f[1]) * 100:+.2f}",
                f"{f[2] * 100:.2f}",
                f"{f[3] * 100:.2f}",
                f"{r.mean_boundary_iou * 100:.2f}",
                str(int(np.sum(r.iou < base.iou - 1e-12))),
            ]
        )
    print_table(
        f"{bench.name}: means over {outcome['frames']} frames",
        ["predictions", "mIoU", "Δ", "F@1px", "Δ", "F@2px", "F@3px", "BIoU", "classes worse"],
        means,
    )
    main = next(iter(outcome["seconds"]))
    after, accuracy = results[main], outcome["direction_accuracy"]
    per_class = []
    for i, name in enumerate(bench.class_names):
        row = [name]
        for values in ((base.iou, after.iou), *((base.boundary_f[t], after.boundary_f[t]) for t in (1, 2, 3))):
            b, a = values[0][i] * 100, values[1][i] * 100
            row += [f"{b:.2f}", f"{a:.2f} ({a - b:+.2f})"]
        per_class.append([*row, f"{accuracy[i]:.1%}"])
    print_table(
        f"per class: coarse -> {main}",
        ["class", "IoU", "IoU after", "F@1", "F@1 after", "F@2", "F@2 after", "F@3", "F@3 after", "dir. acc."],
        per_class,
    )
    worse = [n for i, n in enumerate(bench.class_names) if after.iou[i] < base.iou[i]]
    thin = "".join(f", {n} {accuracy[i]:.1%}" for n, i in bench.thin_classes.items())
    print(f"\ndirection accuracy (boundary in both prediction and ground truth): all "
          f"{outcome['direction_accuracy_all']:.1%}{thin}")  # fmt: skip
    print(f"classes whose IoU fell ({main}): {worse or 'none'}")
    print("seconds per SegFix.refine (mean, first call included): "
          + "; ".join(f"{row} {s:.3f}" for row, s in outcome["seconds"].items()))  # fmt: skip
    return {
        "benchmark": bench.name,
        "frames": outcome["frames"],
        "classes": list(bench.class_names),
        "rows": {
            row: {
                "miou": float(r.miou),
                "boundary_f": {str(t): float(v) for t, v in r.mean_boundary_f.items()},
                "boundary_iou": float(r.mean_boundary_iou),
                "iou": [float(v) for v in r.iou],
                "boundary_f1_per_class": [float(v) for v in r.boundary_f[1]],
            }
            for row, r in results.items()
        },
        "direction_accuracy": [float(v) for v in accuracy],
        "seconds_per_refine": outcome["seconds"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        nargs="+",
        default=["camvid-val"],
        choices=["camvid-val", "camvid-holdout", "cityscapes-held", "cityscapes-tune", "example"],
        help="the labelled sets to report (default: camvid-val)",
    )
    parser.add_argument("--model", default=segfix.list_models()[0], help="default: the recommended bundled model")
    parser.add_argument("--camvid-root", default=str(SHARED / "camvid"))
    parser.add_argument("--cityscapes-root", default=str(SHARED / "cityscapes"))
    parser.add_argument("--holdout", default="10", metavar="N|PREFIX", help="camvid-holdout: every N-th or a drive")
    parser.add_argument("--holdout-coarse", metavar="DIR", help="camvid-holdout: predictions DIR/<name>.png")
    parser.add_argument("--limit", type=int, help="first N frames of each set only")
    parser.add_argument("--levers", action="store_true", help="also flip averaging, no guard, argmax rule, fp32")
    parser.add_argument("--torch-compile", action="store_true", help="every variant through torch.compile")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="model settings to change")
    parser.add_argument("--json", metavar="PATH", help="also write every table as JSON (a new file)")
    args = parser.parse_args(argv)
    extra = {"torch_compile": True} if args.torch_compile else {}
    extra.update({k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)})
    model = segfix.SegFix.from_pretrained(args.model, **extra)
    print(f"# model {args.model!r}{f', settings changed: {extra}' if extra else ''}; {machine()}")
    print(f"# command: python benchmarks/refine_eval.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    decision, pre = model.settings.decision, model.settings.preprocessing
    print(f"# decision {decision}\n# preprocessing {pre}")
    tables = []
    for data in args.data:
        bench = benchmark_of(data, args)
        tables.append(report(bench, evaluate(bench, model, levers=args.levers, limit=args.limit)))
    if args.json:
        with open(args.json, "x") as f:  # never over an existing file
            json.dump({"model": args.model, "settings": extra, "machine": machine(), "tables": tables}, f, indent=1)


if __name__ == "__main__":
    main()
