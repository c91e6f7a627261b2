"""Build the demo assets bundled in ``segfix/assets`` from a CC0 photo shipped with scikit-image.

The photo is scikit-image's ``coffee`` (CC0, photographer Rachel Michetti, courtesy of Pikolo Espresso Bar).
Its "reference" label map comes from a colour clustering (k-means in Lab space, then a majority filter and
removal of small regions): crisp edges that follow the image, not a human annotation. The "coarse" map is
that reference seen through a stride-16 model: downsampled by majority vote, then upsampled with nearest
neighbour, which leaves blocky, displaced boundaries - the error SegFix is meant to fix.

Run: ``python examples/make_demo_assets.py`` (needs scikit-image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.cluster.vq import kmeans2
from skimage import color, data

ASSETS = Path(__file__).resolve().parents[1] / "src" / "segfix" / "assets"
NUM_CLUSTERS = 5
STRIDE = 16


def reference_segmentation(image: np.ndarray) -> np.ndarray:
    lab = color.rgb2lab(ndimage.gaussian_filter(image.astype(float) / 255, sigma=(2, 2, 0)))
    features = lab.reshape(-1, 3) * np.array([0.5, 1.0, 1.0])
    _, labels = kmeans2(features, NUM_CLUSTERS, seed=0, minit="++")
    labels = labels.reshape(image.shape[:2])
    one_hot = np.stack([ndimage.uniform_filter((labels == k).astype(float), 9) for k in range(NUM_CLUSTERS)])
    labels = one_hot.argmax(0)
    # Merge regions under 400 px into their surroundings.
    for _ in range(3):
        for k in range(NUM_CLUSTERS):
            parts, n = ndimage.label(labels == k)
            sizes = ndimage.sum(np.ones_like(parts), parts, range(1, n + 1))
            for i, size in enumerate(sizes, start=1):
                if size < 400:
                    region = parts == i
                    ring = ndimage.binary_dilation(region, iterations=2) & ~region
                    labels[region] = np.bincount(labels[ring], minlength=NUM_CLUSTERS).argmax()
    return labels.astype(np.uint8)


def coarse_prediction(labels: np.ndarray) -> np.ndarray:
    h, w = labels.shape
    hs, ws = -(-h // STRIDE), -(-w // STRIDE)
    padded = np.pad(labels, ((0, hs * STRIDE - h), (0, ws * STRIDE - w)), mode="edge")
    blocks = padded.reshape(hs, STRIDE, ws, STRIDE).transpose(0, 2, 1, 3).reshape(hs, ws, -1)
    votes = np.stack([(blocks == k).sum(-1) for k in range(NUM_CLUSTERS)], -1).argmax(-1).astype(np.uint8)
    # Bilinear upsampling of one-hot scores, as a segmentation head does, then argmax.
    scores = np.stack([(votes == k).astype(np.float32) for k in range(NUM_CLUSTERS)])
    up = np.stack([np.array(Image.fromarray(s).resize((w, h), Image.BILINEAR)) for s in scores])
    return up.argmax(0).astype(np.uint8)


def main() -> None:
    image = data.coffee()
    labels = reference_segmentation(image)
    coarse = coarse_prediction(labels)
    ASSETS.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(ASSETS / "coffee.jpg", quality=92)
    Image.fromarray(labels).save(ASSETS / "coffee_reference.png")
    Image.fromarray(coarse).save(ASSETS / "coffee_coarse.png")
    print(
        f"wrote {ASSETS}: {labels.shape}, {len(np.unique(labels))} classes, "
        f"coarse pixel error {(coarse != labels).mean():.3%}"
    )


if __name__ == "__main__":
    main()
