"""Try segfix as a mistaken user and as an attacker would, and count what happens.

Every case is an input (an array, an image, a file, a folder job, a metric setting, a model config) and what it
must give: the right answer (checked against a reference or the documented invariants) or a clear error (one
line that names what was expected). Each case runs under a time limit; folder cases hash every file outside
``--output`` before and after. The table counts, per group: cases tried, right answers, clear errors, wrong
outputs (a wrong result, a refused valid input, or an error that is not one clear line), data lost and hangs.

    python tools/attack_inputs.py            # about 300 cases, about a minute on 2 cores
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import segfix
from segfix.hub.mixin import ModelLoadError
from segfix.jobs import formats
from segfix.metrics import BoundaryStatistics, SegmentationMetrics
from segfix.synthetic import reference_walk, voronoi_labels

CLEAR_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, ModelLoadError)
TIME_LIMIT_S = 60
REFUSE = "refuse"
UNCLEAR = re.compile(
    r"(KeyError|IndexError|AttributeError|UnicodeDecodeError|MemoryError|RuntimeError|AssertionError|"
    r"ZeroDivisionError|OverflowError|UnidentifiedImageError|NotImplementedError|Traceback).*"
)


@dataclass
class Case:
    group: str
    name: str
    call: Callable[[], object]
    expect: Callable[[object], bool] | str  # a check of the result, or REFUSE
    watch: Path | None = None  # a folder whose files (outside ``output``) must keep their bytes
    output: Path | None = None


class _Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise _Hang


def _hashes(root: Path, skip: Path | None) -> dict[str, str]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            if skip is not None and (path == skip or skip in path.parents):
                continue
            out[str(path)] = "link" if path.is_symlink() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _clear(error: BaseException) -> bool:
    message = str(error)
    return isinstance(error, CLEAR_ERRORS) and 0 < len(message) < 600 and "\n" not in message.strip()


def run(case: Case) -> str:
    before = _hashes(case.watch, case.output) if case.watch else None
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        result = case.call()
        outcome = "wrong output" if case.expect == REFUSE or not case.expect(result) else "right"  # type: ignore[operator]
        if outcome == "wrong output" and case.expect == REFUSE:
            print(f"  {case.group} / {case.name}: accepted instead of refused", file=sys.stderr)
    except _Hang:
        outcome = "hang"
    except SystemExit as error:  # the command line: its exit code is the answer
        outcome = "wrong output" if error.code not in (1, 2) else "clear error"
    except Exception as error:  # noqa: BLE001 - the point is to classify every error
        outcome = "clear error" if case.expect == REFUSE and _clear(error) else "wrong output"
        if outcome == "wrong output":
            print(f"  {case.group} / {case.name}: {type(error).__name__}: {str(error)[:200]}", file=sys.stderr)
    finally:
        signal.alarm(0)
    if outcome == "wrong output" and case.expect != REFUSE:
        print(f"  {case.group} / {case.name}: wrong result", file=sys.stderr)
    if before is not None and _hashes(case.watch, case.output) != before:
        outcome = "data lost"
    return outcome


# ---------------------------------------------------------------------------------------------- array cases

DTYPES = ["uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64", "bool", "float32", "float64"]
BAD_VALUES = [0, -1, 1.5, float("nan"), float("inf"), "2", None, True, 2**70, 10**8]


def array_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    offsets = rng.integers(-1, 2, (2, 5, 6)).astype(np.int8)
    for dtype in DTYPES:
        labels = rng.integers(0, 4, (5, 6)).astype(dtype)
        valid = dtype not in ("float32", "float64")
        for kind in ("numpy", "torch"):
            convert = (lambda a: torch.from_numpy(np.ascontiguousarray(a))) if kind == "torch" else (lambda a: a)
            try:
                lab, off = convert(labels), convert(offsets)
            except TypeError:  # torch has no such dtype
                continue
            expected = reference_walk(labels.astype(np.int64), offsets, 1, 2)
            check = (lambda r, e=expected: np.array_equal(np.asarray(r).astype(np.int64), e)) if valid else REFUSE
            cases.append(
                Case(
                    "arrays",
                    f"shift {dtype} {kind}",
                    lambda x=lab, o=off: segfix.shift_labels(x, o, scale=1, iterations=2),
                    check,
                )
            )
            refine_check = check if dtype != "bool" else REFUSE
            cases.append(
                Case(
                    "arrays",
                    f"refine {dtype} {kind}",
                    lambda x=lab, o=off: segfix.refine_semantic(x, o, scale=1, iterations=2, ignore_index=None),
                    refine_check,
                )
            )
        negative = labels.astype(np.int64) - 1  # -1 is not the ignore label (255): refused
        cases.append(
            Case(
                "arrays",
                f"negative labels {dtype}",
                lambda n=negative: segfix.refine_semantic(n, offsets),
                REFUSE if valid else REFUSE,
            )
        )
    labels = rng.integers(0, 4, (5, 6)).astype(np.uint8)
    prob, moving = np.full((8, 5, 6), 0.125, np.float32), rng.random((5, 6)) < 0.5
    for name in ("scale", "iterations"):
        for value in BAD_VALUES:
            for function in ("shift", "refine", "vote"):
                if function == "shift":
                    call = lambda n=name, v=value: segfix.shift_labels(labels, offsets, **{n: v})
                elif function == "refine":
                    call = lambda n=name, v=value: segfix.refine_semantic(labels, offsets, **{n: v})
                else:
                    call = lambda n=name, v=value: segfix.vote_labels(labels, prob, moving, **{n: v})
                if name == "scale" and value == 2**70 and function == "vote":  # valid: candidates clamp to the border
                    cases.append(
                        Case(
                            "arguments",
                            f"vote scale={value}",
                            call,
                            lambda r: set(np.unique(r)) <= set(np.unique(labels)),
                        )
                    )
                elif name == "scale" and value in (2**70, 10**8) and function != "vote":  # valid: clamps to the border
                    expected = reference_walk(labels.astype(np.int64), np.sign(offsets) * 100, 1, 1)
                    cases.append(
                        Case(
                            "arguments", f"{function} {name}={value}", call, lambda r, e=expected: np.array_equal(r, e)
                        )
                    )
                else:
                    cases.append(
                        Case(
                            "arguments",
                            f"{function} {name}={value!r}",
                            call,
                            REFUSE if not (name == "scale" and value == 10**8) else (lambda r: True),
                        )
                    )
    for name, value in (
        ("ignore_index", "255"),
        ("ignore_index", 1.5),
        ("min_vote_share", float("nan")),
        ("min_vote_share", 2.0),
        ("backend", "cuda"),
    ):
        cases.append(
            Case(
                "arguments",
                f"vote {name}={value!r}",
                lambda n=name, v=value: segfix.vote_labels(labels, prob, moving, **{n: v}),
                REFUSE,
            )
        )
    cases.append(Case("arguments", "vote prob shape", lambda: segfix.vote_labels(labels, prob[:, :2], moving), REFUSE))
    cases.append(
        Case(
            "arguments",
            "meta labels",
            lambda: segfix.refine_semantic(torch.zeros((5, 6), dtype=torch.int64, device="meta"), offsets),
            REFUSE,
        )
    )
    cases.append(
        Case(
            "arguments",
            "scores abcd",
            lambda: segfix.refine_instances(np.ones((2, 5, 6), bool), offsets, scores="abcd", resolve_overlaps=True),
            REFUSE,
        )
    )
    return cases


# ---------------------------------------------------------------------------------------------- image cases


def _as_map(result, shape) -> np.ndarray:
    """One ``(H, W)`` numpy map from whatever form a refine returned (a list, a batch, a tensor)."""
    result = result[0] if isinstance(result, list) else result
    result = result.cpu().numpy() if isinstance(result, torch.Tensor) else np.asarray(result)
    return result.reshape(shape)


def _palette_image(labels: np.ndarray) -> Image.Image:
    image = Image.fromarray(labels)
    image.putpalette([v for c in range(256) for v in (c * 7 % 256, c * 13 % 256, c * 29 % 256)])
    return image


def image_cases(model: segfix.SegFix, rng: np.random.Generator) -> list[Case]:
    labels = voronoi_labels((40, 48), 6, 4, seed=3).astype(np.uint8)
    image = rng.integers(0, 256, (40, 48, 3)).astype(np.uint8)
    expected = model.refine(image, labels)
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    same = lambda r: np.array_equal(np.asarray(r), expected)  # noqa: E731
    right = {
        "uint8 HWC": image,
        "uint8 CHW tensor": tensor,
        "uint8 HWC tensor": tensor.permute(1, 2, 0),  # taken as the numpy image is
        "float in [0, 1]": tensor.float() / 255,
        "float64 in [0, 1]": tensor.double() / 255,
        "PIL RGB": Image.fromarray(image),
        "PIL RGBA": Image.fromarray(np.dstack([image, np.full((40, 48), 255, np.uint8)])),
        "list of one": [image],
        "batch of one": image[None],
    }
    refused = {
        "float 0..255": tensor.float(),
        "ImageNet-normalised": (tensor.float() / 255 - 0.45) / 0.225,
        "NaN pixels": torch.where(tensor > 200, float("nan"), tensor.float() / 255),
        "inf pixels": torch.where(tensor > 200, float("inf"), tensor.float() / 255),
        "negative": tensor.float() / 255 - 0.5,
        "uint16 array": image.astype(np.uint16),
        "float array": image.astype(np.float32),
        "HxWx2 array": image[..., :2],
        "HxWx5 array": np.dstack([image, image[..., :2]]),
        "HWC float tensor": tensor.permute(1, 2, 0).float() / 255,  # which layout is meant is unclear
        "int32 tensor": tensor.int(),
        "meta tensor": torch.zeros((3, 40, 48), device="meta"),
        "empty": np.zeros((0, 48, 3), np.uint8),
        "string": "image.png",
        "None": None,
        "empty list": [],
    }
    cases = []
    for label_kind, lab in (("numpy", labels), ("torch", torch.from_numpy(labels.astype(np.int64)))):
        for name, img in right.items():
            check = lambda r, s=same: s(_as_map(r, expected.shape))  # noqa: E731
            cases.append(
                Case(
                    "images",
                    f"{name} / {label_kind} labels",
                    lambda i=img, x=lab: model.refine(
                        i, x[None] if isinstance(i, list) or (isinstance(i, np.ndarray) and i.ndim == 4) else x
                    ),
                    check,
                )
            )
        for name, img in refused.items():
            cases.append(
                Case("images", f"{name} / {label_kind} labels", lambda i=img, x=lab: model.refine(i, x), REFUSE)
            )
    grey = image[..., 0]
    twins = {  # other forms of an image or a label map, each refined as its plain twin is
        "grey HxW array": (lambda: model.refine(grey, labels), lambda: model.refine(np.dstack([grey] * 3), labels)),
        "RGBA HxWx4 array": (lambda: model.refine(np.dstack([image, grey]), labels), lambda: expected),
        "PIL L label map": (
            lambda: np.asarray(model.refine(image, Image.fromarray(labels))),
            lambda: expected,
        ),
        "PIL P label map": (
            lambda: np.asarray(model.refine(image, _palette_image(labels))),
            lambda: expected,
        ),
        "bool mask": (
            lambda: model.refine(image, labels > 1).astype(np.uint8),
            lambda: model.refine(image, (labels > 1).astype(np.uint8)),
        ),
    }
    for name, (call, twin) in twins.items():
        cases.append(Case("images", name, call, lambda r, t=twin: np.array_equal(np.asarray(r), np.asarray(t()))))
    for name, lab in {
        "float labels": labels.astype(np.float32),
        "labels of another size": labels[:, :40],
        "4-D labels": labels[None, None],
        "logits": np.zeros((5, 40, 48), np.float32),
        "list labels": labels.tolist(),
    }.items():
        cases.append(Case("images", name, lambda x=lab: model.refine(image, x), REFUSE))
    return cases


# ----------------------------------------------------------------------------------------------- file cases


def _refine_job(root: Path, preds: Path, *, offsets: Path | None = None, kind: str = "semantic", extra=()) -> Callable:
    from segfix.cli import main

    def call():
        args = ["refine", str(preds), "--output", str(root / "out"), "--kind", kind, *extra]
        if offsets is not None:
            args += ["--offsets", str(offsets)]
        with contextlib.redirect_stderr(io.StringIO()) as err:
            code = main(args)
        unclear = UNCLEAR.search(err.getvalue())
        if unclear:
            raise RuntimeError(f"a reported reason is no clear error: {unclear.group(0)}")
        if code:  # a failure reported by name, or one error line: the clear answer of a folder job
            raise ValueError(f"exit {code}: {err.getvalue().strip().splitlines()[-1]}")
        return code

    return call


def file_cases(base: Path, rng: np.random.Generator) -> list[Case]:
    cases = []
    labels = voronoi_labels((40, 48), 6, 4, seed=1).astype(np.uint8)
    offsets = segfix.boundary_targets(voronoi_labels((40, 48), 6, 4, seed=2), min_pixels=0).offsets()
    expected = segfix.refine_semantic(labels, offsets)
    assert (offsets != 0).any() and not np.array_equal(expected, labels)  # cases that move pixels

    def job(name: str, write_pred, write_offsets, expect, kind="semantic", extra=()) -> None:
        root = base / f"case{len(cases)}"
        (root / "preds").mkdir(parents=True)
        (root / "offs").mkdir()
        write_pred(root / "preds")
        write_offsets(root / "offs")
        call = _refine_job(root, root / "preds", offsets=root / "offs", kind=kind, extra=extra)
        cases.append(Case("files", name, call, expect, watch=root, output=root / "out"))

    def good_offsets(folder: Path) -> None:
        formats.write_offsets(folder / "a.npz", offsets)

    def right(root_check):
        return lambda result: root_check()

    for mode in ("L", "P", "I;16"):

        def write(folder, m=mode):
            image = Image.fromarray(labels.astype(np.uint16) if m == "I;16" else labels)
            if m == "P":
                image.putpalette(list(range(256)) * 3)
            image.save(folder / "a.png")

        root = base / f"case{len(cases)}"
        job(
            f"label PNG mode {mode}",
            write,
            good_offsets,
            lambda r, rt=root: np.array_equal(np.asarray(Image.open(rt / "out" / "a.png")), expected),
        )
    for mode in ("RGB", "RGBA", "LA"):
        job(f"label PNG mode {mode}", lambda f, m=mode: Image.new(m, (48, 40)).save(f / "a.png"), good_offsets, REFUSE)
    Image.fromarray(labels).save(base / "a.png")
    pred = lambda f: Image.fromarray(labels).save(f / "a.png")  # noqa: E731
    bad_offsets = {
        "npz of another size": lambda f: np.savez(f / "a.npz", offsets=np.zeros((2, 41, 48), np.int8)),
        "npz asking for 1.8 GB": lambda f: np.savez_compressed(
            f / "a.npz", offsets=np.zeros((2, 30000, 30000), np.int8)
        ),
        "text named .npz": lambda f: (f / "a.npz").write_text("hello"),
        "npz of an object array": lambda f: np.savez(f / "a.npz", offsets=np.array([None, 1], dtype=object)),
        "npz without offsets": lambda f: np.savez(f / "a.npz", other=np.zeros(3)),
        "npz with an array scale": lambda f: np.savez(f / "a.npz", offsets=offsets, scale=np.array([1, 2])),
        "npz with a text scale": lambda f: np.savez(f / "a.npz", offsets=offsets, scale=np.array("two")),
        "npz with scale 0": lambda f: np.savez(f / "a.npz", offsets=offsets, scale=np.int64(0)),
        "npz with 10^8 iterations": lambda f: np.savez(f / "a.npz", offsets=offsets, iterations=np.int64(10**8)),
        "npz with rule bogus": lambda f: np.savez(f / "a.npz", offsets=offsets, rule=np.array("bogus")),
        "npz with direction_vote not a bool": lambda f: np.savez(
            f / "a.npz", offsets=offsets, direction_vote=np.array("yes")
        ),
        "npz with rule beside direction_vote": lambda f: np.savez(
            f / "a.npz", offsets=offsets, rule=np.array("vote"), direction_vote=np.array(True)
        ),
        "npz with max_edge_distance beyond its bound": lambda f: np.savez(
            f / "a.npz", offsets=offsets, max_edge_distance=np.int64(10**6)
        ),
        "npz with a fractional max_edge_distance": lambda f: np.savez(
            f / "a.npz", offsets=offsets, max_edge_distance=np.float64(1.5)
        ),
        "npz vote without probabilities": lambda f: np.savez(f / "a.npz", offsets=offsets, rule=np.array("vote")),
        "npz vote with wrong rows": lambda f: np.savez(
            f / "a.npz", offsets=offsets, rule=np.array("vote"), vote_prob=np.zeros((3, 8), np.float32)
        ),
        "npz of float offsets": lambda f: np.savez(f / "a.npz", offsets=offsets.astype(np.float32)),
        "npz offsets beyond 127": lambda f: np.savez(f / "a.npz", offsets=offsets.astype(np.int16) * 200),
        "npz of 1-D offsets": lambda f: np.savez(f / "a.npz", offsets=np.zeros(10, np.int8)),
        "text named .mat": lambda f: (f / "a.mat").write_text("hello"),
        "mat without 'mat'": lambda f: __import__("scipy.io", fromlist=["x"]).savemat(
            f / "a.mat", {"other": np.zeros(3)}
        ),
        "mat of another size": lambda f: __import__("scipy.io", fromlist=["x"]).savemat(
            f / "a.mat", {"mat": np.zeros((41, 48, 2))}
        ),
        "no offsets file": lambda f: None,
    }
    for name, write in bad_offsets.items():
        job(name, pred, write, REFUSE)
    root = base / f"case{len(cases)}"
    job(
        "npz recording scale 1",
        pred,
        lambda f: formats.write_offsets(f / "a.npz", offsets, formats.OffsetSettings(scale=1)),
        lambda r, rt=root: np.array_equal(
            np.asarray(Image.open(rt / "out" / "a.png")), segfix.refine_semantic(labels, offsets, scale=1)
        ),
    )
    root = base / f"case{len(cases)}"
    job(
        ".mat of the original",
        pred,
        lambda f: formats.write_offsets(f / "a.mat", offsets),
        lambda r, rt=root: np.array_equal(np.asarray(Image.open(rt / "out" / "a.png")), expected),
    )
    # instance results
    mask = (labels == labels[20, 24]).astype(np.uint8) * 255

    def txt(content: str, masks=("m.png",)):
        def write(folder: Path) -> None:
            for name in masks:
                Image.fromarray(mask).save(folder / name)
            (folder / "a_pred.txt").write_text(content.replace("{here}", str(folder)))

        return write

    instance = {
        "absolute mask path": ("{here}/m.png 26 0.9\n", "right"),
        "../ mask path": ("../preds/m.png 26 0.9\n", "right"),
        "missing mask": ("nothere.png 26 0.9\n", REFUSE),
        "class id text": ("m.png car 0.9\n", REFUSE),
        "score text": ("m.png 26 abc\n", REFUSE),
        "two columns": ("m.png 26\n", REFUSE),
        "empty results": ("", "right"),
        "mask is a text file": ("a_pred.txt 26 0.9\n", REFUSE),
    }
    for name, (content, expect) in instance.items():
        root = base / f"case{len(cases)}"
        check = REFUSE if expect == REFUSE else (lambda r, rt=root: (rt / "out" / "a_pred.txt").is_file())
        job(f"instances: {name}", txt(content), good_offsets, check, kind="cityscapes-instance")
    # COCO results
    rle = formats.rle_encode(mask > 0)
    coco = {
        "no image_id": [{"category_id": 1, "segmentation": rle}],
        "not a list": {"image_id": 1},
        "size of another image": [{"image_id": "a", "segmentation": {"size": [10, 10], "counts": [100]}}],
        "100000x100000 mask": [{"image_id": "a", "segmentation": {"size": [100000, 100000], "counts": [10**10]}}],
        "negative counts": [{"image_id": "a", "segmentation": {"size": [40, 48], "counts": [-5, 1925]}}],
        "truncated counts": [{"image_id": "a", "segmentation": {"size": [40, 48], "counts": "0a"}}],
        "segmentation not a dict": [{"image_id": "a", "segmentation": [1, 2, 3]}],
        "invalid JSON": "{",
    }
    for name, content in coco.items():
        root = base / f"case{len(cases)}"
        (root / "res").mkdir(parents=True)
        (root / "offs").mkdir()
        good_offsets(root / "offs")
        results = root / "res" / "results.json"
        results.write_text(content if isinstance(content, str) else json.dumps(content))
        call = _refine_job(root, results, offsets=root / "offs", kind="coco")
        cases.append(Case("files", f"coco: {name}", call, REFUSE, watch=root, output=root / "out"))
    return cases


# --------------------------------------------------------------------------------------- metric and config cases


def metric_cases() -> list[Case]:
    cases = []
    for value in (-1, 0, 1, 1.5, float("nan"), float("inf"), "0.02", True):
        cases.append(
            Case(
                "metrics",
                f"boundary_iou_dilation={value!r}",
                lambda v=value: SegmentationMetrics(3, boundary_iou_dilation=v),
                REFUSE,
            )
        )
    for value in ((-1, 2), (1, float("nan")), (), (float("inf"),), "12", (0,)):
        cases.append(Case("metrics", f"widths={value!r}", lambda v=value: BoundaryStatistics(3, widths=v), REFUSE))
        cases.append(
            Case("metrics", f"tolerances={value!r}", lambda v=value: SegmentationMetrics(3, tolerances=v), REFUSE)
        )
    gt = np.repeat(np.arange(7), 4)[None].repeat(5, 0)
    for classes in (3, 5):
        cases.append(
            Case(
                "metrics",
                f"{classes} classes, labels 0..6",
                lambda c=classes: SegmentationMetrics(c).update(gt, gt),
                REFUSE,
            )
        )
    pred = gt.copy()
    pred[0, 0] = 9
    cases.append(Case("metrics", "prediction 9 of 7 classes", lambda: SegmentationMetrics(7).update(pred, gt), REFUSE))
    m = SegmentationMetrics(7)
    cases.append(
        Case("metrics", "perfect maps", lambda: (m.update(gt, gt), m.compute())[1], lambda r: abs(r.miou - 1) < 1e-12)
    )
    return cases


def config_cases(base: Path) -> list[Case]:
    tiny = dict(backbone="test_resnet", out_indices=(1, 2, 3), decoder_channels=8, head_channels=8)
    model = base / "model"
    segfix.SegFix(**tiny).save_pretrained(model)
    config = json.loads((model / "config.json").read_text())
    hostile = {
        "17 G parameters": {"backbone": "vit_huge_patch14_224", "backbone_kwargs": {"embed_dim": 32768, "depth": 128}},
        "100 out_indices": {"out_indices": list(range(100))},
        "unknown backbone": {"backbone": "resnet5000"},
        "checkpoint_path": {"backbone_kwargs": {"checkpoint_path": "/etc/passwd"}},
        "pretrained_cfg_overlay": {"backbone_kwargs": {"pretrained_cfg_overlay": {"file": "/x"}}},
        "decoder of 10^6 channels": {"decoder_channels": 10**6},
        "head of -1 channels": {"head_channels": -1},
        "unknown key": {"surprise": 1},
    }
    cases = []
    for name, change in hostile.items():

        def call(c=change):
            folder = base / "hostile"
            folder.mkdir(exist_ok=True)
            (folder / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes())
            (folder / "config.json").write_text(json.dumps({**config, "network": {**config["network"], **c}}))
            return segfix.SegFix.from_pretrained(folder)

        cases.append(Case("configs", name, call, REFUSE))
    for name, value in (
        ("iterations", 10**6),
        ("semantic_scale", 10**6),
        ("window_size", 10**6),
        ("max_whole_pixels", 2**40),
        ("boundary_threshold", float("nan")),
    ):
        cases.append(
            Case(
                "configs",
                f"{name}={value}",
                lambda n=name, v=value: segfix.SegFix.from_pretrained(model, **{n: v}),
                REFUSE,
            )
        )
    big = lambda: segfix.SegFix.from_pretrained(
        model, input_scale=4.0, inference="whole", max_whole_pixels=1 << 28
    ).refine(  # noqa: E731
        np.zeros((1024, 2048, 3), np.uint8), np.zeros((1024, 2048), np.uint8)
    )
    cases.append(Case("configs", "settings worth 17 GiB", big, REFUSE))
    return cases


def image_file_cases(base: Path, model_folder: Path) -> list[Case]:
    """Image files of every mode a user may hand in, refined by a model: each read as Pillow's RGB (16-bit grey
    by its range) or refused."""
    from segfix.cli import main

    model = segfix.SegFix.from_pretrained(model_folder)
    labels = voronoi_labels((40, 48), 6, 4, seed=4).astype(np.uint8)
    grey = np.linspace(0, 255, 40 * 48).reshape(40, 48).astype(np.uint8)
    rgb = np.dstack([grey, grey[::-1], grey[:, ::-1]])
    sources = {
        "RGB": (Image.fromarray(rgb), rgb),
        "L": (Image.fromarray(grey), np.repeat(grey[..., None], 3, 2)),
        "P": (Image.fromarray(rgb).convert("P"), np.asarray(Image.fromarray(rgb).convert("P").convert("RGB"))),
        "RGBA": (Image.fromarray(rgb).convert("RGBA"), rgb),
        "LA": (Image.fromarray(grey).convert("LA"), np.repeat(grey[..., None], 3, 2)),
        "1": (Image.fromarray(grey > 128), np.repeat(((grey > 128) * 255).astype(np.uint8)[..., None], 3, 2)),
        "I;16": (Image.fromarray(grey.astype(np.uint16) * 257), np.repeat(grey[..., None], 3, 2)),
        "CMYK (jpeg)": (Image.fromarray(rgb).convert("CMYK"), None),
    }
    cases = []
    for name, (image, as_rgb) in sources.items():
        root = base / f"img{len(cases)}"
        (root / "images").mkdir(parents=True)
        (root / "preds").mkdir()
        Image.fromarray(labels).save(root / "preds" / "a.png")
        suffix = ".jpg" if "jpeg" in name else ".png"
        image.save(root / "images" / f"a{suffix}")
        if as_rgb is None:
            as_rgb = np.asarray(Image.open(root / "images" / f"a{suffix}").convert("RGB"))
        expected = model.refine(as_rgb, labels)

        def call(rt=root):
            with contextlib.redirect_stderr(io.StringIO()):
                args = ["refine", str(rt / "preds"), "--images", str(rt / "images"), "--model", str(model_folder)]
                return main([*args, "--output", str(rt / "out")])

        check = lambda r, rt=root, e=expected: (
            r == 0 and np.array_equal(np.asarray(Image.open(rt / "out" / "a.png")), e)
        )  # noqa: E731
        cases.append(Case("image files", f"mode {name}", call, check, watch=root, output=root / "out"))
    for name, write in {
        "float TIFF": lambda f: Image.fromarray(np.full((40, 48), 0.5, np.float32)).save(f / "a.tif"),
        "32-bit TIFF": lambda f: Image.fromarray(np.full((40, 48), 70000, np.int32)).save(f / "a.tif"),
        "image of another size": lambda f: Image.fromarray(np.zeros((41, 48, 3), np.uint8)).save(f / "a.png"),
        "text named .png": lambda f: (f / "a.png").write_text("hello"),
        "a.png and a.jpg": lambda f: [Image.fromarray(rgb).save(f / n) for n in ("a.png", "a.jpg")],
    }.items():
        root = base / f"img{len(cases)}"
        (root / "images").mkdir(parents=True)
        (root / "preds").mkdir()
        Image.fromarray(labels).save(root / "preds" / "a.png")
        write(root / "images")

        def refused(rt=root):
            with contextlib.redirect_stderr(io.StringIO()) as err:
                args = ["refine", str(rt / "preds"), "--images", str(rt / "images"), "--model", str(model_folder)]
                code = main([*args, "--output", str(rt / "out")])
            if UNCLEAR.search(err.getvalue()):
                raise RuntimeError(err.getvalue())
            if code:
                raise ValueError(err.getvalue().strip().splitlines()[-1])
            return code

        cases.append(Case("image files", name, refused, REFUSE, watch=root, output=root / "out"))
    return cases


def round3_cases(base: Path, model: segfix.SegFix) -> list[Case]:
    """Issue 35's findings: every integer label dtype on the model path with the "auto" guard, window settings
    that cannot work, non-finite normalisation, configs that give a setting twice, finished outputs asked for by
    another source, reports over inputs, stats beyond its classes."""
    from segfix.cli import main

    def cli(args: list[str]) -> int:
        code = main(args)
        if code:  # the exit code a shell would see: run() reads 1 and 2 as a clear refusal
            raise SystemExit(code)
        return code

    cases: list[Case] = []
    guarded = model.with_settings(thin_guard=1, thin_guard_classes="auto", boundary_threshold=0.0)
    image = np.random.default_rng(5).integers(0, 256, (40, 48, 3)).astype(np.uint8)
    labels = voronoi_labels((40, 48), 6, 4, seed=5).astype(np.int64)
    labels[:, 20] = 9  # a thin class for the guard to find
    expected = guarded.refine(image, labels)
    for dtype in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64"):
        for kind, wrap in (("numpy", lambda a: a), ("torch", torch.from_numpy)):
            same = lambda r, e=expected: np.array_equal(_as_map(r, e.shape).astype(np.int64), e)  # noqa: E731
            call = lambda d=dtype, w=wrap: guarded.refine(image, w(labels.astype(d)))  # noqa: E731
            cases.append(Case("round 3", f"{dtype} {kind} labels, auto guard", call, same))
    photo = np.zeros((400, 600, 3), np.uint8)
    for name, settings in (
        ("16 px windows every pixel", dict(inference="sliding", window_size=16, window_stride=1)),
        ("stride longer than the window", dict(window_size=64, window_stride=(96, 32))),
        ("NaN mean", dict(mean=(float("nan"), 0.5, 0.5))),
        ("infinite std", dict(std=(0.5, float("inf"), 0.5))),
    ):
        call = lambda s=settings: model.with_settings(**s).refine(photo, np.zeros((400, 600), np.uint8))  # noqa: E731
        cases.append(Case("round 3", name, call, REFUSE))
    folder = base / "round3-model"
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    for name, changed in (
        ("flat key beside its group's", {**config, "iterations": 3}),
        ("legacy key beside its successor", {**config, "decision": {**config["decision"], "direction_threshold": 0.5}}),
    ):

        def twice(c=changed, n=name):
            other = base / f"round3-{n.split()[0]}"
            other.mkdir(exist_ok=True)
            (other / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
            (other / "config.json").write_text(json.dumps(c))
            return segfix.SegFix.from_pretrained(other)

        cases.append(Case("round 3", f"config: {name}", twice, REFUSE))
    root = base / "round3-jobs"
    for sub in ("images", "preds", "gt"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        Image.fromarray(image).save(root / "images" / f"f{i}.png")
        Image.fromarray(voronoi_labels((40, 48), 6, 4, seed=i)).save(root / "preds" / f"f{i}.png")
        Image.fromarray(voronoi_labels((40, 48), 6, 4, seed=i)).save(root / "gt" / f"f{i}.png")
    job = ["refine", str(root / "preds"), "--images", str(root / "images"), "--output", str(root / "out")]
    cli([*job, "--model", str(folder)])
    other = base / "round3-other"
    model.with_settings(iterations=4).save_pretrained(other)
    cases.append(Case("round 3", "finished folder, another model", lambda: cli([*job, "--model", str(other)]),
                      REFUSE, watch=root, output=None))  # fmt: skip
    for flag in ("--json", "--csv", "--markdown"):
        report = [
            "eval",
            str(root / "preds"),
            str(root / "gt"),
            "--num-classes",
            "4",
            flag,
            str(root / "gt" / "f0.png"),
        ]
        cases.append(Case("round 3", f"eval {flag} over a ground-truth file", lambda r=report: cli(r), REFUSE,
                          watch=root))  # fmt: skip
    stats = ["stats", str(root / "gt"), "--num-classes", "2"]
    cases.append(Case("round 3", "stats with labels beyond --num-classes", lambda: cli(stats), REFUSE))
    return cases


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", nargs="+", default=[], metavar="GROUP", help="groups not to run, e.g. configs")
    skip = set(parser.parse_args(argv).skip)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = segfix.SegFix(backbone="test_resnet", out_indices=(1, 2, 3), decoder_channels=8, head_channels=8).eval()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        cases = array_cases(rng) + image_cases(model, rng) + metric_cases() + file_cases(base / "files", rng)
        cases += config_cases(base) + image_file_cases(base / "image-files", base / "model")
        cases += round3_cases(base, model)
        cases = [case for case in cases if case.group not in skip]
        import logging

        logging.disable(logging.WARNING)  # the cases' own warnings; given back below, so a caller's logging works
        table: dict[str, Counter] = {}
        try:
            for case in cases:
                with contextlib.redirect_stdout(io.StringIO()):
                    outcome = run(case)
                if outcome != "right" and outcome != "clear error":
                    print(f"    -> {outcome}", file=sys.stderr)
                table.setdefault(case.group, Counter())[outcome] += 1
        finally:
            logging.disable(logging.NOTSET)
    columns = ("right", "clear error", "wrong output", "data lost", "hang")
    print("| group | cases | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 2) + "|")
    total: Counter = Counter()
    for group, counts in table.items():
        total += counts
        print(f"| {group} | {sum(counts.values())} | " + " | ".join(str(counts[c]) for c in columns) + " |")
    print(f"| **all** | {sum(total.values())} | " + " | ".join(str(total[c]) for c in columns) + " |")
    return 0 if not (total["wrong output"] or total["data lost"] or total["hang"]) else 1


if __name__ == "__main__":
    sys.exit(main())
