"""A process that refines for a long time: resident memory after every 50 refines of random image sizes, with
worker threads that allocate and free large arrays beside it (as a web server's or a data loader's do).

Run: ``python benchmarks/soak_memory.py [--refines 350] [--threads 2] [--model NAME]``. Each configuration runs
in a fresh process: as shipped; with ``allow_keeping_freed_memory(False)`` (glibc as it is) as the reference; and
with oneDNN's and ideep's kernel caches as torch leaves them (1024 each), what segfix did before bounding them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, print_table, voronoi_labels  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(model_name: str, refines: int, threads: int, config: str) -> dict:
    import os

    import torch

    if config == "torch-cache":  # the kernel caches as torch leaves them (before segfix bounded them)
        os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = os.environ["LRU_CACHE_CAPACITY"] = "1024"
    keep = config != "glibc"

    import segfix
    from segfix.prediction.memory import allow_keeping_freed_memory

    torch.set_num_threads(2)
    allow_keeping_freed_memory(keep)
    model = segfix.SegFix.from_pretrained(model_name)
    stop = threading.Event()

    def churn():  # 40 MB arrays made and dropped, as other parts of a long-running process do
        while not stop.is_set():
            block = np.ones(10_000_000, np.float32)
            block += 1
            del block
            time.sleep(0.005)

    workers = [threading.Thread(target=churn, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    rng = np.random.default_rng(0)
    samples = [rss_mib()]
    start = time.perf_counter()
    for i in range(1, refines + 1):
        h, w = int(rng.integers(200, 1100)), int(rng.integers(200, 2100))
        labels = voronoi_labels((h, w), 40, 11, seed=i)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        model.refine(image, labels)
        if i % 50 == 0:
            samples.append(rss_mib())
    stop.set()
    for w in workers:
        w.join()
    return {"rss": samples, "seconds": time.perf_counter() - start}


CONFIGS = {
    "kept": "as shipped (freed memory kept, kernel caches 128)",
    "glibc": "glibc as it is (kernel caches 128)",
    "torch-cache": "freed memory kept, kernel caches as torch keeps them (1024)",
}


def main() -> None:
    import segfix

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refines", type=int, default=350)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=segfix.list_models()[0])
    parser.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.refines, args.threads, args.child)))
        return
    print(f"# {args.refines} refines of random sizes (200-1100 x 200-2100), {args.threads} threads churning 40 MB "
          f"arrays, model {args.model}; {machine()}")  # fmt: skip
    rows = []
    for name, label in CONFIGS.items():
        cmd = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--refines",
            str(args.refines),
            "--threads",
            str(args.threads),
        ]
        out = json.loads(
            subprocess.run([*cmd, "--model", args.model], check=True, capture_output=True, text=True).stdout
        )
        rows.append([label, *(f"{v:.0f}" for v in out["rss"]), f"{out['seconds']:.0f}"])
    header = ["configuration", "start", *(f"after {50 * k}" for k in range(1, len(rows[0]) - 2)), "seconds"]
    print_table("resident memory, MiB (VmRSS), after every 50 refines", header, rows)


if __name__ == "__main__":
    main()
