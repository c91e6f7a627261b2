"""CamVid val (or held-out training frames): the commands of earlier results, now run by refine_eval.py.

``python benchmarks/camvid_val.py [--model NAME] [--holdout-coarse DIR [--holdout N|PREFIX]] [--set ...]`` is
``python benchmarks/refine_eval.py --data camvid-val --levers ...`` (``camvid-holdout`` with
``--holdout-coarse``): the same tables, the levers' rows included, as the earlier results quote them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import refine_eval  # noqa: E402


def translate(argv: list[str]) -> list[str]:
    """This script's flags -> refine_eval.py's (``--root`` was the CamVid root)."""
    data = "camvid-holdout" if "--holdout-coarse" in argv else "camvid-val"
    out = ["--data", data, "--levers"]
    for arg in argv:
        out.append("--camvid-root" if arg == "--root" else arg)
    return out


if __name__ == "__main__":
    refine_eval.main(translate(sys.argv[1:]))
