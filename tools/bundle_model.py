"""Copy a trained model folder into the package as a bundled model, with half-precision weights.

Run: ``python tools/bundle_model.py runs/camvid/model camvid-lite0 [--fp32]``. The model card
(README.md) is written by hand beside it with the measured metrics; this tool keeps an existing one.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

PACKAGE_MODELS = Path(__file__).resolve().parents[1] / "src" / "segfix" / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder")
    parser.add_argument("name")
    parser.add_argument("--fp32", action="store_true", help="keep float32 weights")
    args = parser.parse_args()
    source, target = Path(args.folder), PACKAGE_MODELS / args.name
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "config.json", target / "config.json")
    state = load_file(str(source / "model.safetensors"))
    if not args.fp32:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(target / "model.safetensors"), metadata={"format": "pt", "library": "segfix"})
    if not (target / "README.md").exists():
        shutil.copy(source / "README.md", target / "README.md")
    size = (target / "model.safetensors").stat().st_size / 2**20
    print(f"bundled {source} as {args.name!r} in {target} ({size:.1f} MiB)")


if __name__ == "__main__":
    main()
