"""The bundled model as shipped, refining a 1024x2048 image, against DenseCRF in the same run; real Cityscapes and
CamVid frames with a real network's maps (when ../shared/data holds them); where the time goes; and peak memory at
1024x2048, 2048x4096 and 4096x8192.

Targets (issue #15): the recommended bundled model, with the settings it ships with (``precision="auto"``, its
decision rule and flip setting), at least 15x faster than DenseCRF (``pydensecrf2``, 5 mean-field iterations,
standard Potts settings) on the same 2 cores (the goal is 25x); a 4096x8192 image refines in under 4 GiB.
Each configuration runs in a fresh subprocess, so that its peak memory (max RSS) is its own.

Run: ``python benchmarks/bench_model.py`` (``--quick``: 512x1024, fewer repeats; ``--model NAME``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, median_seconds, print_table, voronoi_labels  # noqa: E402

# Variants of the shipped model: what its own settings cost, and what each lever would change.
VARIANTS = {
    "as shipped": {},
    "network at full resolution": {"max_network_pixels": 0},
    "as shipped, fp32": {"precision": "fp32"},
    "with flip averaging": {"flip_tta": True},
    "argmax rule (no vote)": {"direction_vote": False},
    # torch.compile: the first image compiles (its time is reported apart); the median is of the later ones
    "compiled (torch.compile)": {"torch_compile": True},
}


def scene(shape: tuple[int, int]):
    """A synthetic street-like scene: 19 classes of Voronoi regions, each with its own colour plus noise."""
    rng = np.random.default_rng(0)
    labels = voronoi_labels(shape, 120, 19, seed=1)
    palette = rng.integers(0, 216, (19, 3))
    image = (palette[labels] + rng.integers(0, 40, (*shape, 3))).astype(np.uint8)
    return image, labels.astype(np.uint8)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(name: str, overrides: dict):
    import torch

    from segfix import SegFix

    torch.set_num_threads(2)
    return SegFix.from_pretrained(name, **overrides).eval()


def run_variant(model_name: str, variant: str, shape: tuple[int, int], repeat: int) -> dict:
    from segfix.network.precision import resolve_precision

    model = load(model_name, VARIANTS[variant])
    image, labels = scene(shape)
    start = time.perf_counter()
    model.refine(image, labels)
    first = time.perf_counter() - start
    total = median_seconds(lambda: model.refine(image, labels), repeat=repeat, warmup=0)
    return {
        "total": total,
        "first": first,
        "peak_mib": peak_mib(),
        "precision": resolve_precision(model.settings.inference.precision, model.device),
        "flip": model.settings.inference.flip_tta,
        "vote": model.settings.decision.direction_vote,
        "network_scale": model.network_scale(shape),
    }


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_FRAMES = {
    # held-out Cityscapes frames (benchmarks/refine_eval.py) and CamVid val frames, each with a real network's map
    "Cityscapes 1024x2048 (ESPNet maps)": [
        (SHARED / "cityscapes/leftImg8bit/train/aachen" / f"aachen_0000{i}_000019_leftImg8bit.png",
         SHARED / "cityscapes/coarse_skd_espnet/train/aachen" / f"aachen_0000{i}_000019_leftImg8bit.png")
        for i in (35, 40, 45)
    ],
    "CamVid 360x480 (ESPNet maps)": [
        (SHARED / "camvid/val" / name, SHARED / "camvid/val_espnet" / name)
        for name in ("0016E5_07959.png", "0016E5_08019.png", "0016E5_08079.png")
    ],
}  # fmt: skip
"""Real frames timed beside the synthetic scene: they hold more boundary pixels (research-use data, read in
place, skipped when absent)."""


def run_real(model_name: str, kind: str, repeat: int) -> dict:
    """Median seconds of ``refine`` as shipped over a few real frames of ``kind`` (the median of each frame's)."""
    from segfix.data.files import read_image, read_label

    model = load(model_name, {})
    medians, moving = [], []
    for image_path, labels_path in REAL_FRAMES[kind]:
        image, labels = read_image(image_path), read_label(labels_path)
        model.refine(image, labels)
        medians.append(median_seconds(lambda i=image, m=labels: model.refine(i, m), repeat=repeat, warmup=0))
        moving.append(int((model.refine(image, labels) != labels).sum()))
    return {"total": float(np.median(medians)), "frames": len(medians), "changed": int(np.median(moving)),
            "network_scale": model.network_scale(image.shape[:2])}  # fmt: skip


def run_split(model_name: str, shape: tuple[int, int], repeat: int) -> dict:
    """The shipped refine path, stage by stage, through the library's own objects (one network pass; flip
    averaging repeats the network stages)."""
    import torch
    import torch.nn.functional as F

    from segfix.network.precision import autocast_context
    from segfix.ops.field import apply_field
    from segfix.prediction.decision import decide
    from segfix.prediction.inference import InferenceNetwork
    from segfix.prediction.inputs import to_batch
    from segfix.prediction.memory import keep_freed_memory
    from segfix.prediction.outputs import DirectionsOnDemand, NetworkOutputs

    model = load(model_name, {})
    net = InferenceNetwork().get(model.net)  # what refine runs: the batch norms folded into the convolutions
    keep_freed_memory()  # as refine does on the CPU
    image, labels = scene(shape)
    factor = model.network_scale(shape)
    network_size = tuple(max(1, round(s * factor)) for s in shape)

    def autocast():
        return autocast_context(torch.device("cpu"), model.settings.inference.precision)

    with torch.inference_mode():

        def network_input():
            x = to_batch(image, model.device).groups[0]
            if factor != 1.0:
                x = F.interpolate(x, size=network_size, mode="bilinear", align_corners=False)
            return model.normalize(x).contiguous(memory_format=torch.channels_last)

        x = network_input()

        def backbone():
            with autocast():
                return net.backbone(x)

        feats = backbone()

        def decoder():
            with autocast():
                return net.decoder(feats)

        fused = decoder()

        def boundary_head():
            with autocast():
                return net.boundary_head(fused)

        b = boundary_head()
        precision = model.settings.inference.precision

        def decision():  # boundary probability to image size; the direction head only where it is read
            prob = b.float().softmax(1)[:, 1].contiguous()
            directions = DirectionsOnDemand(net.direction_head, fused, precision)
            return decide(NetworkOutputs(prob, directions, shape, model.align_corners), model.settings.decision)

        field = decision()

        def label_step():
            return apply_field(field, labels, ignore_index=model.settings.decision.ignore_index)

        stages = {
            f"input (to {network_size[0]}x{network_size[1]})": network_input,
            "backbone": backbone,
            "decoder": decoder,
            "boundary head": boundary_head,
            "decision (direction head where read; to image size)": decision,
            "vote" if model.settings.decision.direction_vote else "shift": label_step,
        }
        return {name: median_seconds(fn, repeat=repeat, warmup=1) for name, fn in stages.items()}


def run_memory(model_name: str, shape: tuple[int, int], overrides: dict) -> dict:
    import time

    model = load(model_name, overrides)
    image, labels = scene(shape)
    start = time.perf_counter()
    model.refine(image, labels)
    factor = model.network_scale(shape)
    return {
        "seconds": time.perf_counter() - start,
        "peak_mib": peak_mib(),
        "network_scale": factor,
        "sliding": shape[0] * shape[1] * factor**2 > model.settings.inference.max_whole_pixels,
    }


def run_densecrf(shape: tuple[int, int], repeat: int) -> dict:
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels

    image, labels = scene(shape)
    h, w = shape

    def crf():
        d = dcrf.DenseCRF2D(w, h, 19)
        d.setUnaryEnergy(unary_from_labels(labels.astype(np.int32), 19, gt_prob=0.7, zero_unsure=False))
        d.addPairwiseGaussian(sxy=3, compat=3)
        d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.ascontiguousarray(image), compat=10)
        return np.argmax(d.inference(5), axis=0).reshape(h, w)

    total = median_seconds(crf, repeat=max(3, repeat // 2), warmup=1)
    return {"total": total, "peak_mib": peak_mib()}


def child_main(args) -> dict:
    shape = tuple(args.shape)
    if args.child == "densecrf":
        return run_densecrf(shape, args.repeat)
    if args.child == "split":
        return run_split(args.model, shape, args.repeat)
    if args.child in REAL_FRAMES:
        return run_real(args.model, args.child, args.repeat)
    if args.child == "memory":
        return run_memory(args.model, shape, {})
    if args.child == "memory, network at full resolution":
        return run_memory(args.model, shape, VARIANTS["network at full resolution"])
    return run_variant(args.model, args.child, shape, args.repeat)


def main() -> None:
    import segfix

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", default=segfix.list_models()[0], help="bundled model (default: the recommended)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_main(args)))
        return
    shape = (512, 1024) if args.quick else (1024, 2048)
    repeat = 3 if args.quick else 7
    print(f"# {args.model} as shipped vs DenseCRF, {shape[0]}x{shape[1]} image; {machine()}")
    print(f"# command: python benchmarks/bench_model.py{' --quick' if args.quick else ''} --model {args.model}")

    def child(name: str, at: tuple[int, int] = shape) -> dict:
        cmd = [sys.executable, __file__, "--child", name, "--model", args.model, "--shape", *map(str, at)]
        out = subprocess.run([*cmd, "--repeat", str(repeat)], check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    try:
        crf = child("densecrf")
    except subprocess.CalledProcessError as error:
        crf = None
        print(f"(DenseCRF unavailable: pip install pydensecrf2; {error.stderr.strip().splitlines()[-1]})")
    rows = []
    for variant in VARIANTS:
        r = child(variant)
        ratio = crf["total"] / r["total"] if crf else float("nan")
        target = "yes" if ratio >= 15 else "no"
        settings = (
            f"{r['precision']}, {'vote' if r['vote'] else 'argmax'}, {'flip' if r['flip'] else 'no flip'}, "
            f"network x{r['network_scale']:.2f}"
        )
        rows.append(
            [
                variant,
                settings,
                f"{r['total']:.3f}",
                f"{r['first']:.1f}",
                f"{ratio:.1f}x",
                target,
                f"{r['peak_mib']:.0f}",
            ]
        )
    if crf:
        crf_row = ["DenseCRF, 5 iterations (pydensecrf2)", "-", f"{crf['total']:.3f}", "-", "1.0x", "-"]
        rows.append([*crf_row, f"{crf['peak_mib']:.0f}"])
    print_table(
        "end to end (target: >= 15x faster than DenseCRF, goal 25x)",
        ["configuration", "settings", "median s", "first call s", "vs DenseCRF", ">= 15x", "peak RSS MiB"],
        rows,
    )
    real_rows = []
    for kind, frames in REAL_FRAMES.items():
        if all(image.is_file() and labels.is_file() for image, labels in frames):
            r = child(kind)
            real_rows.append(
                [kind, str(r["frames"]), f"x{r['network_scale']:.2f}", f"{r['total']:.3f}", str(r["changed"])]
            )
    if real_rows:
        print_table(
            f"real frames ({args.model} as shipped; median over frames of each frame's median)",
            ["frames", "count", "network", "median s", "pixels changed (median)"],
            real_rows,
        )
    split = child("split")
    total = sum(split.values())
    print_table(
        f"where the time goes ({args.model} as shipped, one network pass, medians)",
        ["stage", "ms", "share"],
        [[k, f"{v * 1e3:.0f}", f"{v / total:.0%}"] for k, v in split.items()] + [["sum", f"{total * 1e3:.0f}", "100%"]],
    )
    sizes = [shape, (shape[0] * 2, shape[1] * 2)] + ([] if args.quick else [(4096, 8192)])
    mem_rows = []
    for label, name in (("as shipped", "memory"), ("network at full resolution", "memory, network at full resolution")):
        for size in sizes:
            m = child(name, size)
            verdict = "yes" if size != (4096, 8192) or m["peak_mib"] < 4096 else "no"
            how = f"{'sliding windows' if m['sliding'] else 'whole'}, network x{m['network_scale']:.2f}"
            mem_rows.append(
                [label, f"{size[0]}x{size[1]}", how, f"{m['seconds']:.1f}", f"{m['peak_mib']:.0f}", verdict]
            )
    print_table(
        "peak memory of one refine (target: 4096x8192 under 4096 MiB)",
        ["configuration", "image", "inference", "s (one run)", "peak RSS MiB", "ok"],
        mem_rows,
    )


if __name__ == "__main__":
    main()
