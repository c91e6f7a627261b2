"""End-to-end speed of ``SegFix.refine`` on a 1024x2048 image against DenseCRF, with a time breakdown.

Target: ``SegFix.refine`` (network + offsets + shift) at most 1.0 s median on this 2-core CPU with a
``tf_efficientnet_lite0``-class backbone, measured beside DenseCRF (``pydensecrf2``, 5 mean-field iterations,
standard Potts settings) in the same run. Each configuration runs in a fresh subprocess so that its peak memory
(max RSS) is its own.

Run: ``python benchmarks/bench_model.py`` (``--quick``: 512x1024, fewer repeats).
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

CONFIGS = {
    # The bundled CamVid model's architecture (stride-2 FPN decoder, 3x3 heads).
    "bundled architecture, fp32": dict(
        model=dict(out_indices=(0, 1, 2, 3, 4), decoder_channels=48, head_channels=48, head_kernel_size=3),
        precision="fp32",
    ),
    "bundled architecture, bf16 (AMX)": dict(
        model=dict(out_indices=(0, 1, 2, 3, 4), decoder_channels=48, head_channels=48, head_kernel_size=3),
        precision="bf16",
    ),
    "default (stride-4 FPN), fp32": dict(model=dict(), precision="fp32"),
    "default (stride-4 FPN), bf16 (AMX)": dict(model=dict(), precision="bf16"),
}


def scene(shape: tuple[int, int]):
    """A synthetic street-like scene: 19 classes of Voronoi regions, each with its own colour plus noise."""
    rng = np.random.default_rng(0)
    labels = voronoi_labels(shape, 120, 19, seed=1)
    palette = rng.integers(0, 216, (19, 3))
    image = (palette[labels] + rng.integers(0, 40, (*shape, 3))).astype(np.uint8)
    return image, labels


def run_segfix(name: str, shape: tuple[int, int], repeat: int) -> dict:
    import torch

    from segfix import SegFix, refine_semantic
    from segfix.directions import direction_to_offset

    torch.set_num_threads(2)
    cfg = CONFIGS[name]
    model = SegFix(**cfg["model"], precision=cfg["precision"], inference="whole").eval()
    model.to(memory_format=torch.channels_last)
    image, labels = scene(shape)
    total = median_seconds(lambda: model.refine(image, labels), repeat=repeat, warmup=1)

    # Breakdown: the same steps as refine(), timed one by one.
    x = model._to_batch(image)[0][0].contiguous(memory_format=torch.channels_last)
    from segfix.inference import autocast_context

    def backbone():
        with torch.inference_mode(), autocast_context(x.device, cfg["precision"]):
            return model.net.backbone(x)

    feats = backbone()

    def heads():
        with torch.inference_mode(), autocast_context(x.device, cfg["precision"]):
            fused = model.net.decoder(feats)
            return model.net.boundary_head(fused), model.net.direction_head(fused)

    b, d = heads()

    def upsample():
        with torch.inference_mode():
            prob = torch.nn.functional.interpolate(b.float().softmax(1)[:, 1:2], size=shape, mode="bilinear")[:, 0]
            logits = torch.nn.functional.interpolate(d.float(), size=shape, mode="bilinear")
            return direction_to_offset(logits.argmax(1), prob > 0.5)[0].numpy()

    offsets = upsample()
    parts = {
        "backbone": median_seconds(backbone, repeat=repeat, warmup=0),
        "decoder + heads": median_seconds(heads, repeat=repeat, warmup=0),
        "upsample + offsets": median_seconds(upsample, repeat=repeat, warmup=0),
        "shift": median_seconds(lambda: refine_semantic(labels, offsets), repeat=repeat, warmup=0),
    }
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"total": total, "parts": parts, "peak_mib": peak_mib}


def run_batching(repeat: int) -> dict:
    """Per-image time of refine() on 8 CamVid-sized images (360x480): one call for all vs one call each."""
    import torch

    from segfix import SegFix

    torch.set_num_threads(2)
    model = SegFix(**CONFIGS["bundled architecture, fp32"]["model"], precision="fp32").eval()
    scenes = [scene((360, 480)) for _ in range(8)]
    images = [s[0] for s in scenes]
    labels = np.stack([s[1] for s in scenes])
    batched = median_seconds(lambda: model.refine(images, labels), repeat=repeat, warmup=1) / len(images)
    single = median_seconds(
        lambda: [model.refine(img, lbl) for img, lbl in zip(images, labels)], repeat=repeat, warmup=1
    ) / len(images)
    return {"batched": batched, "single": single}


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
    return {"total": total, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (512, 1024) if args.quick else (1024, 2048)
    repeat = 3 if args.quick else 7
    if args.child:
        if args.child == "densecrf":
            result = run_densecrf(shape, repeat)
        elif args.child == "batching":
            result = run_batching(repeat)
        else:
            result = run_segfix(args.child, shape, repeat)
        print(json.dumps(result))
        return
    print(f"# SegFix.refine end to end, {shape[0]}x{shape[1]} image, whole-image inference; {machine()}")
    print(f"# command: python benchmarks/bench_model.py{' --quick' if args.quick else ''}")

    def child(name: str) -> dict:
        cmd = [sys.executable, __file__, "--child", name] + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    try:
        crf = child("densecrf")
    except subprocess.CalledProcessError as error:
        crf = None
        print(f"(DenseCRF unavailable: pip install pydensecrf2; {error.stderr.strip().splitlines()[-1]})")
    rows, shares = [], []
    for name in CONFIGS:
        start = time.perf_counter()
        r = child(name)
        ratio = f"{crf['total'] / r['total']:.1f}x faster" if crf else "-"
        verdict = "yes" if r["total"] <= 1.0 else "no"
        rows.append([name, f"{r['total']:.3f}", verdict, ratio, f"{r['peak_mib']:.0f}"])
        parts_total = sum(r["parts"].values())
        shares.append([name] + [f"{v * 1e3:.0f} ms ({v / parts_total:.0%})" for v in r["parts"].values()])
        del start
    if crf:
        rows.append(
            ["DenseCRF, 5 iterations (pydensecrf2)", f"{crf['total']:.3f}", "-", "1.0x", f"{crf['peak_mib']:.0f}"]
        )
    print_table(
        "end to end (target: <= 1.0 s median)",
        ["configuration", "median s", "<= 1 s", "vs DenseCRF", "peak RSS MiB"],
        rows,
    )
    print_table(
        "where the time goes", ["configuration", "backbone", "decoder + heads", "upsample + offsets", "shift"], shares
    )
    b = child("batching")
    print(
        f"\nbatching (8 images of 360x480, bundled architecture, fp32): {b['batched'] * 1e3:.0f} ms per image in "
        f"one call vs {b['single'] * 1e3:.0f} ms one by one ({b['single'] / b['batched']:.2f}x)"
    )


if __name__ == "__main__":
    main()
