"""What each ``segfix`` command does, once :mod:`segfix.cli` has parsed its arguments: one function per command,
``(args) -> exit code``. Each imports the library's heavy parts (torch, the model, the jobs) only when it runs."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from .limits import MAX_EDGE_DISTANCE

__all__ = [
    "UsageError",
    "check_device",
    "convert",
    "demo",
    "eval_",
    "models",
    "offsets",
    "refine",
    "stats",
    "train",
    "tune",
]

_logger = logging.getLogger("segfix")


class UsageError(ValueError):
    """A command used wrongly (a missing flag, a non-empty output): one ``error:`` line and exit code 2, as every
    other user error (docs/cli.md)."""


def demo(args: argparse.Namespace) -> int:
    import numpy as np

    from . import viz
    from .data.example import load_example
    from .data.files import atomic_write, write_png
    from .hub.registry import list_models
    from .metrics.accumulators import SegmentationMetrics
    from .ops.refine import refine_semantic
    from .ops.targets import boundary_targets

    example = load_example()
    image, reference, coarse, num_classes = example.image, example.reference, example.coarse, example.num_classes
    oracle = refine_semantic(coarse, boundary_targets(reference, min_pixels=0).offsets(), scale=2)

    rows = [("coarse input", coarse)]
    model_name = None if args.oracle else (args.model or next(iter(list_models()), None))
    if model_name is not None:
        from .prediction.segfix_model import SegFix

        model = SegFix.from_pretrained(model_name, device=args.device)
        model.refine(image, coarse)  # warm-up: the first call compiles kernels
        start = time.perf_counter()
        refined = model.refine(image, coarse)
        elapsed = time.perf_counter() - start
        prediction = model.predict(image)
        rows.append((f"SegFix ({model_name})", refined))
        what = f"the SegFix model {model_name!r} ({elapsed * 1e3:.0f} ms)"
    else:
        refined = oracle
        what = "offsets from the reference labels (the oracle)"
    rows.append(("oracle offsets (upper bound)", oracle))

    out = Path(args.output)
    direction, moving = (prediction.direction, prediction.boundary) if model_name is not None else (None, None)
    sheet = viz.refinement_sheet(
        image, coarse, refined, reference, num_classes=num_classes, direction=direction, moving=moving
    )
    atomic_write(out / "demo.png", lambda tmp: sheet.save(tmp, format="PNG"))
    write_png(out / "refined.png", refined.astype(np.uint8))

    print(f"segfix demo: refined a {coarse.shape[1]}x{coarse.shape[0]} coarse label map with {what}")
    print(f"  {'':30s}{'mIoU':>8s}{'F@1px':>8s}{'F@2px':>8s}{'F@3px':>8s}{'pixels changed':>16s}")
    for label, prediction_map in rows:
        m = SegmentationMetrics(num_classes, tolerances=(1, 2, 3))
        m.update(prediction_map, reference)
        r = m.compute()
        f = r.mean_boundary_f
        changed = int((prediction_map != coarse).sum())
        print(f"  {label:30s}{r.miou * 100:8.2f}{f[1] * 100:8.2f}{f[2] * 100:8.2f}{f[3] * 100:8.2f}{changed:16d}")
    print(f"  wrote {out / 'demo.png'} and {out / 'refined.png'}")
    return 0


def models(args: argparse.Namespace) -> int:
    from .hub.registry import BUNDLED_MODELS, list_models

    names = list_models(args.filter or "")
    if not names:
        raise UsageError(f"no bundled model matches {args.filter!r}; segfix models lists them all")
    width = max(len(name) for name in names)
    for number, name in enumerate(names):
        mark = " (recommended)" if number == 0 and not args.filter else ""
        print(f"{name:<{width}}  {BUNDLED_MODELS[name].description}{mark}")
    return 0


def train(args: argparse.Namespace) -> int:
    from .training.policy import tune_and_save
    from .training.recipes import RECIPE_CHAINS, RECIPES, TrainRecipe
    from .training.train import train, train_chain

    chain = RECIPE_CHAINS.get(args.recipe) if args.recipe else None
    recipe = chain.stages[0] if chain else RECIPES[args.recipe] if args.recipe else TrainRecipe()
    keys = ("iterations", "batch_size", "crop_size", "lr", "workers", "precision", "optimizer", "seed", "init")
    changes: dict[str, Any] = {"resume": args.resume}
    tuples = ("proportions", "paste_classes")
    weighting = ("class_balance", "thin_weight", "thin_radius", "copy_paste")
    for key in (*keys, *weighting, *tuples, "checkpoint_every", "holdout", "cache_targets"):
        value = getattr(args, key)
        if value is not None:
            changes[key] = tuple(value) if key in tuples else value
    changes.update(_scale_ranges(args.scale_range, len(args.dataset)))
    if args.backbone:
        changes["model"] = {**(recipe.model or {}), "backbone": args.backbone}
    if args.from_scratch:
        changes["imagenet"] = False
    val_dataset = None
    if args.val_dataset:
        kind_root, _, split = args.val_dataset.partition("@")
        val_dataset = _reader(kind_root, split or "val")
        changes.update(val_coarse=args.val_coarse, validate_every=args.validate_every)
    recipe = recipe.replace(**changes)  # checked here, before any data is read
    datasets = [_reader(spec) for spec in args.dataset]
    held_out = None
    if recipe.holdout:
        datasets[0], held_out = datasets[0].split(recipe.holdout)
    output = Path(args.output)
    print(
        f"segfix train: {', '.join(f'{type(d).__name__} ({len(d)} images)' for d in datasets)}"
        f"{f'; {len(held_out)} held out' if held_out is not None else ''} -> {output}"
    )
    if chain is not None:  # every stage in a row, each resumable; the chain's own settings at the end
        final = train_chain(datasets, output, chain, val_dataset=val_dataset, **changes)
        print(f"  model written to {final} (load with SegFix.from_pretrained({str(final)!r}))")
        return 0
    final = train(datasets, output, recipe, val_dataset=val_dataset)
    if held_out is not None:
        best = tune_and_save(str(final), held_out, final, output / "settings.json")
        print(f"  settings chosen on {len(held_out)} held-out images: {best}")
    print(f"  model written to {final} (load with SegFix.from_pretrained({str(final)!r}))")
    return 0


def _scale_ranges(given: list[list[float]] | None, datasets: int) -> dict[str, Any]:
    """``--scale-range`` given once (every dataset) or once per ``--dataset`` -> the recipe fields."""
    if not given:
        return {}
    if len(given) == 1:
        return {"scale_range": tuple(given[0])}
    if len(given) != datasets:
        raise UsageError(
            f"--scale-range: expected it once (every dataset) or once per --dataset ({datasets}), got {len(given)}"
        )
    return {"scale_ranges": tuple(tuple(pair) for pair in given)}


def tune(args: argparse.Namespace) -> int:
    from .jobs.evaluation import read_predictions
    from .training.policy import tune_and_save

    target = Path(args.output)
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} is not empty; choose a new folder (nothing is overwritten)")
    _check_settings(dict(args.set))
    dataset = _reader(args.dataset, args.split)
    if args.holdout:
        _, dataset = dataset.split(args.holdout)
    kind = args.dataset.split("=", 1)[0]
    names = [Path(image).stem for image, _ in dataset.pairs]
    coarse = {folder: read_predictions(Path(folder), names, kind) for folder in args.coarse} if args.coarse else None
    what = f"the predictions in {', '.join(args.coarse)}" if coarse is not None else "stand-in coarse maps"
    print(f"segfix tune: {args.model} on {type(dataset).__name__} ({len(dataset)} images, {what}) -> {target}")
    flips = {"search": (False, True), "on": (True,), "off": (False,)}[args.flip]
    guards = tuple(sorted(set(args.thin_guard)))
    edges = tuple(sorted(set(args.max_edge_distance)))
    if edges[-1] > MAX_EDGE_DISTANCE:
        raise UsageError(f"--max-edge-distance: expected values up to {MAX_EDGE_DISTANCE}, got {edges[-1]}")
    overrides = dict(args.set)
    search = tuple(args.search) if args.search else None
    best = tune_and_save(
        args.model, dataset, target, target / "settings.json", args.device, coarse, flips, guards, overrides, search,
        edges,
    )  # fmt: skip
    print(f"  settings chosen on {len(dataset)} held-out images: {best}")
    print(f"  model written to {target} (load with SegFix.from_pretrained({str(target)!r}))")
    return 0


def refine(args: argparse.Namespace) -> int:
    from .jobs.pairing import count_files
    from .jobs.refine import refine_folder

    if (args.model is None) == (args.offsets is None):
        raise UsageError("pass exactly one of --model or --offsets")
    model = _load_model(args.model, args.device, args.compile) if args.model else None
    num_classes, ignore, label_format, palette = _preset(args.dataset)
    label_format = args.label_format or label_format
    ignore = args.ignore_index if args.ignore_index is not None else ignore
    labels = Path(args.predictions)
    shard = _shard(args)
    count = 1 if args.kind == "coco" else count_files(labels, ".png" if args.kind == "semantic" else "_pred.txt")
    bar, update = _progress(len(shard.take(range(count))) if shard.index == 0 else 0, "segfix refine")
    report = refine_folder(
        labels,
        Path(args.output),
        images_dir=Path(args.images) if args.images else None,
        model=model,
        offsets_dir=Path(args.offsets) if args.offsets else None,
        kind=args.kind,
        label_format=label_format,
        coco_results=Path(args.predictions) if args.kind == "coco" else None,
        coco_images=Path(args.coco_images) if args.coco_images else None,
        scale=args.scale,
        iterations=args.iterations,
        ignore_index=ignore,
        batch_size=args.batch_size,
        workers=args.workers,
        save_viz=args.save_viz,
        palette=palette,
        shard=shard,
        progress=update,
    )
    bar.close()
    return _report("refine", report, args.output, shard, launched=args.shard is None)


def offsets(args: argparse.Namespace) -> int:
    from .jobs.offsets import offsets_folder
    from .jobs.pairing import IMAGE_SUFFIXES, count_files

    model = _load_model(args.model, args.device, args.compile)
    shard = _shard(args)
    count = count_files(Path(args.images), IMAGE_SUFFIXES)
    bar, update = _progress(len(shard.take(range(count))) if shard.index == 0 else 0, "segfix offsets")
    report = offsets_folder(
        Path(args.images),
        Path(args.output),
        model,
        file_format=args.format,
        batch_size=args.batch_size,
        workers=args.workers,
        shard=shard,
        progress=update,
    )
    bar.close()
    return _report("offsets", report, args.output, shard, launched=args.shard is None)


def eval_(args: argparse.Namespace) -> int:
    import json

    from .data.files import atomic_write
    from .jobs.evaluation import comparison_markdown, evaluate_pairs, matching_pairs, write_results_csv

    num_classes, ignore, label_format, names = _label_settings(args, "eval")
    folders = [Path(args.pred)] + ([Path(args.compare)] if args.compare else [])
    _refuse_reports_inside([args.json, args.csv, args.markdown], [*folders, Path(args.gt)])
    results = []
    for folder in folders:
        pairs = matching_pairs(folder, Path(args.gt))
        bar, update = _progress(len(pairs), f"segfix eval {folder.name}")
        try:
            results.append(
                evaluate_pairs(
                    pairs,
                    num_classes=num_classes,
                    stored_ignore=ignore,
                    label_format=label_format,
                    pred_format=args.pred_format,
                    class_names=names,
                    tolerances=args.tolerances,
                    progress=update,
                )
            )
        except ValueError as error:
            raise ValueError(f"{error}{_format_hint(args, str(error))}") from error
        bar.close()
    table = comparison_markdown(results[0], results[-1], folders) if len(results) == 2 else results[0].to_markdown()
    print(_plain_table(table))  # Markdown goes to --markdown; a terminal gets aligned columns
    if args.json:
        payload = json.dumps({str(f): r.as_dict() for f, r in zip(folders, results)}, indent=1)
        atomic_write(Path(args.json), lambda tmp: tmp.write_text(payload))
    if args.markdown:
        atomic_write(Path(args.markdown), lambda tmp: tmp.write_text(table + "\n"))
    if args.csv:
        write_results_csv(Path(args.csv), results, folders)
    return 0


def _refuse_reports_inside(reports: list[str | None], inputs: list[Path]) -> None:
    """A report (--json, --csv, --markdown) may never land on or inside a folder it scores."""
    for report in filter(None, reports):
        real = Path(os.path.realpath(report))
        for folder in inputs:
            inside = Path(os.path.realpath(folder))
            if real == inside or inside in real.parents:
                raise UsageError(f"{report} lies inside the input folder {folder}; write reports outside every input")


def _format_hint(args: argparse.Namespace, error: str) -> str:
    """What to try when Cityscapes ground truth is read as trainIds (its files hold labelIds up to 33)."""
    if args.dataset == "cityscapes" and "ground truth" in error and "target" in error:
        return (
            "; gtFine *_labelIds.png hold labelIds: use --dataset cityscapes-labelid, with --pred-format trainid "
            "for predictions stored as trainIds"
        )
    return ""


def stats(args: argparse.Namespace) -> int:
    from .jobs.evaluation import boundary_statistics_files, ground_truth_files, statistics_markdown

    num_classes, ignore, label_format, names = _label_settings(args, "stats")
    files = ground_truth_files(Path(args.gt))
    bar, update = _progress(len(files), "segfix stats")
    stats = boundary_statistics_files(
        files,
        num_classes=num_classes,
        stored_ignore=ignore,
        label_format=label_format,
        class_names=names,
        widths=args.widths,
        progress=update,
    )
    bar.close()
    print(statistics_markdown(stats, names, args.widths))
    return 0


def convert(args: argparse.Namespace) -> int:
    from .jobs.convert import convert_official_checkpoint

    convert_official_checkpoint(args.checkpoint, args.output, backbone=args.backbone)
    print(f"segfix convert-official: wrote {args.output} (load with SegFix.from_pretrained({args.output!r}))")
    return 0


def _check_settings(settings: dict[str, Any]) -> None:
    """Refuse, before any work, a ``--set`` name that is no setting (network arguments included) or a bad value."""
    from .hub.config import LEGACY_DIRECTION_THRESHOLD
    from .hub.settings import FLAT_NAMES, ModelSettings

    if LEGACY_DIRECTION_THRESHOLD in settings:
        raise UsageError("--set direction_threshold: now min_direction_confidence (argmax) or min_vote_share (vote)")
    unknown = sorted(set(settings) - set(FLAT_NAMES))
    if unknown:
        raise UsageError(f"--set: expected settings among {sorted(FLAT_NAMES)}, got {unknown}")
    try:
        ModelSettings().replace(**settings)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--set: {error}") from None


def _preset(dataset: str | None) -> tuple[int | None, int, str, str | None]:
    """(num_classes, ignore label as stored, label format, palette) of ``--dataset`` (defaults without one)."""
    if dataset is None:
        return None, 255, "trainid", None
    from .data.registry import DATASETS

    info = DATASETS[dataset]
    return info.num_classes, info.stored_ignore, info.label_format, info.palette


def _label_settings(args: argparse.Namespace, command: str) -> tuple[int, int, str, list[str]]:
    """(num_classes, stored ignore label, label format, class names) from --dataset / --num-classes /
    --label-format."""
    from .data.registry import DATASETS

    num_classes, ignore, label_format, _ = _preset(args.dataset)
    num_classes = args.num_classes or num_classes
    if num_classes is None:
        raise UsageError("pass --dataset or --num-classes")
    known = DATASETS[args.dataset] if args.dataset else None
    names = known.names() if known and known.num_classes == num_classes else [str(i) for i in range(num_classes)]
    return num_classes, ignore, args.label_format or label_format, names


def _load_model(name: str, device: str | None, torch_compile: bool = False):
    from .prediction.segfix_model import SegFix

    if device is None and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():  # torchrun: one GPU per process on each node
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    model = SegFix.from_pretrained(name, device=device)
    return model.with_settings(torch_compile=True) if torch_compile else model


def _shard(args: argparse.Namespace):
    """--shard K/N, else what torchrun's RANK and WORLD_SIZE say, else the whole job."""
    from .jobs.sharding import Shard

    return args.shard if args.shard is not None else Shard.from_environment()


def _report(command: str, report, output: str, shard=None, launched: bool = False) -> int:
    """Print a folder job's summary and failures (once, on rank 0, for a torchrun launch); the exit code says
    whether every file of this process succeeded."""
    own_ok = report.ok
    if shard is not None:
        from .jobs.report import JobReport
        from .jobs.sharding import gather_on_first

        reports = gather_on_first(report, shard) if launched else [report]
        if reports is None:
            return 0 if own_ok else 1
        report = JobReport.combine(reports)
    where = f" (shard {shard.index}/{shard.count})" if shard is not None and shard.is_split and not launched else ""
    processes = f" ({shard.count} processes)" if shard is not None and shard.is_split and launched else ""
    print(f"segfix {command}: {report.summary()}{where}{processes} -> {output}")
    for name, reason in report.failed:
        print(f"  FAILED {name}: {reason}", file=sys.stderr)
    return 0 if own_ok and report.ok else 1


def _progress(total: int, desc: str):
    """(bar, update): a progress bar drawn from its first update on, so a job that fails while checking its
    inputs prints only its error line."""
    bar = _LazyBar(total, desc)
    return bar, bar


class _LazyBar:
    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc = total, desc
        self.bar: Any = None

    def __call__(self, count: int) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, dynamic_ncols=True, disable=self.total == 0)
        self.bar.update(count)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _plain_table(markdown: str) -> str:
    """A Markdown table (and any lines around it) as aligned plain-text columns for a terminal."""
    rows, out = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-:") for c in cells):
                rows.append(cells)
        else:
            out.append(line)
    if rows:
        widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(len(rows[0]))]
        for r in rows:
            out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out).strip("\n")


def check_device(name: str) -> None:
    from .checks import check_device_available

    check_device_available(name, f"--device {name}", "use --device cpu")


def _reader(spec: str, split: str | None = None):
    from .data.registry import dataset_from_spec

    try:
        return dataset_from_spec(spec, split)
    except ValueError as error:
        raise UsageError(str(error)) from None
