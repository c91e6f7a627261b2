"""Start-up of a fresh process: ``segfix --help`` and the first refine, against importing torch in the same run.

Targets (issue 28): ``segfix --help`` within 1.5 s; the first 480x360 refine within torch's import time + 2.5 s.
Each row is the median of ``--repeat`` fresh processes.

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


if __name__ == "__main__":
    main()
