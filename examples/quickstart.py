"""Quickstart: load the bundled SegFix model, refine a coarse label map, look at it, evaluate it.

Run: ``python examples/quickstart.py`` (writes quickstart.png). The same steps as examples/quickstart.ipynb.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

import segfix
from segfix import SegFix, viz
from segfix.metrics import SegmentationMetrics


def main(output: Path = Path("quickstart.png")) -> None:
    assets = resources.files("segfix") / "assets"
    image = np.asarray(Image.open(assets / "coffee.jpg").convert("RGB"))
    coarse = np.asarray(Image.open(assets / "coffee_coarse.png"))  # any model's prediction
    reference = np.asarray(Image.open(assets / "coffee_reference.png"))

    model = SegFix.from_pretrained("camvid-lite0")  # bundled: no download
    refined = model.refine(image, coarse)

    for name, labels in (("coarse", coarse), ("refined", refined)):
        m = SegmentationMetrics(int(reference.max()) + 1)
        m.update(labels, reference)
        r = m.compute()
        print(f"{name:8s} mIoU {r.miou:.2%}  boundary F@1px {r.mean_boundary_f[1]:.2%}")

    prediction = model.predict(image)
    sheet = viz.panel(
        [
            image,
            viz.overlay_boundary(image, prediction.boundary),
            viz.direction_wheel(prediction.direction, prediction.boundary),
            viz.colorize(coarse, 5),
            viz.colorize(refined, 5),
            viz.error_map(coarse, refined, reference),
        ],
        ["image", "predicted boundary", "predicted directions", "coarse", "refined", "fixed / broken"],
    )
    sheet.save(output)
    print(f"wrote {output}; offsets moved {int((refined != coarse).sum())} pixels; models: {segfix.list_models()}")


if __name__ == "__main__":
    main()
