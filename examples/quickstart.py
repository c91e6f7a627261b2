"""Quickstart: load the bundled SegFix model, refine a coarse label map, look at it, evaluate it.

Run: ``python examples/quickstart.py`` (writes quickstart.png). The same steps as examples/quickstart.ipynb.
"""

from __future__ import annotations

from pathlib import Path

import segfix
from segfix import SegFix, viz
from segfix.metrics import SegmentationMetrics


def main(output: Path = Path("quickstart.png")) -> None:
    example = segfix.load_example()  # a CC0 photo, a coarse map (any model's prediction), a reference
    model = SegFix.from_pretrained("camvid-lite0-v7")  # bundled: no download
    refined = model.refine(example.image, example.coarse)

    for name, labels in (("coarse", example.coarse), ("refined", refined)):
        m = SegmentationMetrics(example.num_classes)
        m.update(labels, example.reference)
        print(f"{name:8s}", m.compute())

    prediction = model.predict(example.image)
    sheet = viz.refinement_sheet(
        example.image,
        example.coarse,
        refined,
        example.reference,
        direction=prediction.direction,
        moving=prediction.boundary,
    )
    sheet.save(output)
    print(f"wrote {output}; {int((refined != example.coarse).sum())} pixels changed; models: {segfix.list_models()}")


if __name__ == "__main__":
    main()
