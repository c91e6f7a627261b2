"""Training throughput and memory on this machine: images/s, share of time waiting for data, peak RSS.

Uses the bundled model's architecture (``RECIPES['camvid-cpu'].model``) at crop 512, batch 8, with
targets computed on the fly in 2 data-loading workers; CamVid from ../shared when present, synthetic scenes
otherwise. Compares fp32 with bf16 autocast (AMX on this CPU). Each configuration runs in a fresh process.

Run: ``python benchmarks/bench_train.py [--steps 6]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, print_table, voronoi_labels  # noqa: E402

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


class Synthetic:
    num_classes, ignore_index = 11, 255

    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int):
        from segfix.data.datasets import Sample

        label = voronoi_labels((360, 480), 40, 11, seed=i).astype(np.int64)
        image = np.stack([label * 20, label * 7 % 255, 255 - label * 20], -1).astype(np.uint8)
        return Sample(image=image, label=label, name=str(i))


def child(precision: str, steps: int, crop: int, batch: int) -> dict:
    import torch

    from segfix.data.datasets import CamVid
    from segfix.training.recipes import RECIPES
    from segfix.training.train import train

    torch.set_num_threads(2)
    dataset = CamVid(CAMVID, "train") if (CAMVID / "train").is_dir() else Synthetic()
    times = []

    def tick(step, model):
        times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as run:
        start = time.perf_counter()
        train(
            [dataset],
            run,
            iterations=steps,
            batch_size=batch,
            crop_size=crop,
            workers=2,
            precision=precision,
            model=RECIPES["camvid-cpu"].model,
            imagenet=False,
            progress=False,
            checkpoint_every=10**9,
            on_step_end=tick,
        )
    # The first step includes worker start-up; measure the rest.
    per_step = np.diff(times)
    import segfix.training.train as training

    del training
    return {
        "images_per_s": batch / float(np.median(per_step)),
        "startup_s": times[0] - start,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "data": "CamVid" if (CAMVID / "train").is_dir() else "synthetic",
    }


def data_share(steps: int, crop: int, batch: int) -> float:
    """Time to produce one batch in the main process, as a share of one bf16 training step's time."""
    from segfix.data.augment import TrainTransform
    from segfix.data.datasets import CamVid

    dataset = CamVid(CAMVID, "train") if (CAMVID / "train").is_dir() else Synthetic()
    transform = TrainTransform(crop, (0.75, 1.5), ignore_index=255)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(batch * 2):
        transform(dataset[i], rng)
    return (time.perf_counter() - start) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.crop, args.batch)))
        return
    print(f"# training throughput, crop {args.crop}, batch {args.batch}, bundled architecture; {machine()}")
    print(f"# command: python benchmarks/bench_train.py --steps {args.steps}")
    rows = []
    results = {}
    for precision in ("fp32", "bf16"):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            precision,
            "--steps",
            str(args.steps),
            "--crop",
            str(args.crop),
            "--batch",
            str(args.batch),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        results[precision] = r
        rows.append(
            [
                precision,
                f"{r['images_per_s']:.2f}",
                f"{args.batch / r['images_per_s']:.2f}",
                f"{r['peak_mib']:.0f}",
                r["data"],
            ]
        )
    print_table("training steps", ["precision", "images/s", "s/step", "peak RSS MiB", "data"], rows)
    batch_seconds = data_share(args.steps, args.crop, args.batch)
    step_seconds = args.batch / results["bf16"]["images_per_s"]
    print(
        f"\ndata: one batch of {args.batch} crops takes {batch_seconds:.2f} s to build in one process "
        f"({batch_seconds / step_seconds:.0%} of a bf16 step); with 2 workers in parallel the loader is "
        f"{'not ' if batch_seconds / 2 < step_seconds else ''}the bottleneck"
    )


if __name__ == "__main__":
    main()
