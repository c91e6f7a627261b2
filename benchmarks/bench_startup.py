"""Start-up of a fresh process: ``segfix --help`` and the first refine, against importing torch in the same run.

Targets (issue 28): ``segfix --help`` within 1.5 s; the first 480x360 refine within torch's import time + 2.5 s.
Each row is the median of ``--repeat`` fresh processes.

The cold start (issue 35): the first ten 1024x2048 refines of a fresh process, each timed, with numba's cache
empty (``NUMBA_CACHE_DIR`` pointed at a new folder: numba compiles the kernels, in a background thread for the
vote, while the torch vote serves), then warm (a second process on the same folder: the kernels load from it).

Run: ``python benchmarks/bench_startup.py``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from _common import machine, print_table

FIRST_REFINE = """
import time
start = time.perf_counter()
import torch
torch_done = time.perf_counter()
import segfix
example = segfix.load_example()
image, labels = example.image[:360, :480], example.coarse[:360, :480]
model = segfix.SegFix.from_pretrained(segfix.list_models()[0])
model.refine(image, labels)
done = time.perf_counter()
print(torch_done - start, done - torch_done)
"""


COLD_REFINES = """
import time
import numpy as np
import segfix
from segfix.synthetic import voronoi_labels
model = segfix.SegFix.from_pretrained(segfix.list_models()[0])
image = np.random.default_rng(0).integers(0, 256, (1024, 2048, 3), dtype=np.uint8)
labels = voronoi_labels((1024, 2048), 40, 11, seed=1)
times = []
for _ in range(10):
    start = time.perf_counter()
    model.refine(image, labels)
    times.append(time.perf_counter() - start)
print(" ".join(f"{t:.3f}" for t in times))
"""


def cold_and_warm() -> list[list[str]]:
    """The ten refine times of a process with numba's cache empty, then of one with it warm."""
    import os
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("numba cache empty (first process)", "numba cache warm (next process)"):
            out = subprocess.run(
                [sys.executable, "-c", COLD_REFINES], check=True, capture_output=True, text=True, env=env
            )
            times = [float(v) for v in out.stdout.split()]
            rows.append([label, *(f"{v:.2f}" for v in times), f"{sum(times):.1f}"])
    return rows


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per row (median)")
    repeat = parser.parse_args().repeat
    segfix_cli = [sys.executable, "-m", "segfix", "--help"]
    wall(segfix_cli)  # the first run after an install also writes bytecode caches
    help_s = statistics.median(wall(segfix_cli) for _ in range(repeat))
    torch_s = statistics.median(wall([sys.executable, "-c", "import torch"]) for _ in range(repeat))
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", FIRST_REFINE], check=True, capture_output=True, text=True)
        runs.append([float(v) for v in out.stdout.split()])
    after_torch = statistics.median(r[1] for r in runs)
    print(f"# segfix start-up, fresh processes, median of {repeat}; {machine()}")
    print("# command: python benchmarks/bench_startup.py")
    rows = [
        ["python -c 'import torch' (reference)", f"{torch_s:.2f}", "", ""],
        ["segfix --help", f"{help_s:.2f}", "<= 1.5 s", "yes" if help_s <= 1.5 else "no"],
        [
            "first 480x360 refine, after importing torch",
            f"{after_torch:.2f}",
            "<= 2.5 s after torch",
            "yes" if after_torch <= 2.5 else "no",
        ],
    ]
    print_table("start-up", ["what", "seconds", "target", "met"], rows)
    header = ["1024x2048 refines of a fresh process", *(f"#{i}" for i in range(1, 11)), "total s"]
    print_table("cold start: seconds per refine", header, cold_and_warm())


if __name__ == "__main__":
    main()
