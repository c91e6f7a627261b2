"""References and small makers shared by the test modules, written once: import them with ``from helpers import
...`` (pytest puts this folder on the path, beside conftest.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.morphology import disk

from segfix.data.datasets import Sample
from segfix.synthetic import reference_walk, voronoi_labels

__all__ = [
    "TINY",
    "TINY16",
    "TRAIN_ARGS",
    "TinySet",
    "saved_weights",
    "constant_heads",
    "random_image",
    "reference_scores",
    "scene",
    "seg2bmap_reference",
    "cityscapes_and_ade20k_folders",
    "write_png_at",
    "free_port",
    "image_and_labels",
    "read_label",
    "reference_walk",
    "voronoi_labels",
]

TINY = dict(backbone="test_resnet", out_indices=(1, 2, 3), decoder_channels=8, head_channels=8)
TINY16 = dict(backbone="test_resnet", out_indices=(1, 2, 3), decoder_channels=16, head_channels=16)
"""Network arguments of a SegFix model small enough to build and run in a test (timm's test_resnet)."""


def read_label(path: Path) -> np.ndarray:
    """A label PNG's stored values, as Pillow reads them (no palette, no conversion)."""
    with Image.open(path) as image:
        return np.array(image)


def free_port() -> int:
    """A local TCP port nothing listens on (once the probe is closed): for process groups and dead servers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TinySet:
    """In-memory dataset of Voronoi scenes whose image colours follow the labels."""

    num_classes, ignore_index, class_names = 4, 255, ["a", "b", "c", "d"]

    def __init__(self, n=6, size=(40, 48), seed=0):
        self.samples = []
        for i in range(n):
            label = voronoi_labels(size, 6, 4, seed=seed * 100 + i).astype(np.int64)
            image = np.stack([(label * 60) % 256, (label * 90) % 256, (label * 30) % 256], -1).astype(np.uint8)
            self.samples.append(Sample(image=image, label=label, name=f"s{i}"))

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def random_image(h=48, w=64, seed=0) -> np.ndarray:
    """A random RGB image ``(h, w, 3)`` uint8."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def constant_heads(model, direction: int, boundary: bool = True):
    """Make both heads of a SegFix model output constant logits: boundary or not, and one fixed direction class."""
    import torch

    for head, target in ((model.net.boundary_head, 1 if boundary else 0), (model.net.direction_head, direction)):
        bn = head[1]
        with torch.no_grad():
            bn.weight.zero_()
            bn.bias.fill_(1.0)  # hidden activations are 1 everywhere
            head[2].weight.zero_()
            head[2].weight[target] = 1.0
    return model


def scene(i: int):
    """A Voronoi scene: (image coloured by its labels, the true labels, a coarse map shifted by 2 px)."""
    truth = voronoi_labels((40, 56), 8, 5, seed=i)
    coarse = truth.copy()
    coarse[:, 2:] = truth[:, :-2]
    image = np.stack([truth.astype(np.int64) * 50 % 256] * 3, -1).astype(np.uint8)
    return image, truth, coarse


TRAIN_ARGS = dict(
    model=TINY,
    imagenet=False,
    batch_size=2,
    crop_size=32,
    workers=0,
    lr=0.01,
    progress=False,
    checkpoint_every=1,
    scale_range=(0.8, 1.2),
    seed=5,
)
"""Keyword arguments of a tiny, seeded, CPU training run (``segfix.training.train(..., **TRAIN_ARGS)``)."""


def saved_weights(folder):
    """The tensors a saved model folder holds, by name."""
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def seg2bmap_reference(seg):
    """DAVIS seg2bmap, written as in the original (zero-filled neighbours, then the last row/column fixed)."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def reference_scores(preds, gts, num_classes, ignore, tolerances, ratio):
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    bcounts = np.zeros((num_classes, len(tolerances), 4))
    biou = np.zeros((num_classes, 2))
    for p, g in zip(preds, gts):
        valid = g != ignore
        d = max(1, int(round(ratio * np.hypot(*g.shape))))
        for c in range(num_classes):
            pc, gc = (p == c) & valid, (g == c) & valid
            inter[c] += (pc & gc).sum()
            union[c] += (pc | gc).sum()
            pb, gb = seg2bmap_reference(pc), seg2bmap_reference(gc)
            for i, t in enumerate(tolerances):
                bcounts[c, i] += [
                    (pb & ndimage.binary_dilation(gb, structure=disk(t))).sum(),
                    pb.sum(),
                    (gb & ndimage.binary_dilation(pb, structure=disk(t))).sum(),
                    gb.sum(),
                ]
            bands = []
            for m in (p == c, g == c):
                padded = np.pad(m, 1)
                eroded = ndimage.binary_erosion(padded, np.ones((3, 3)), iterations=d)[1:-1, 1:-1]
                bands.append(m & ~eroded & valid)
            biou[c] += [(bands[0] & bands[1]).sum(), (bands[0] | bands[1]).sum()]
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
        f = {}
        for i, t in enumerate(tolerances):
            mp, npred, mg, ngt = bcounts[:, i].T
            prec = np.where(npred > 0, mp / np.maximum(npred, 1), 0.0)
            rec = np.where(ngt > 0, mg / np.maximum(ngt, 1), 0.0)
            fs = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-300), 0.0)
            f[t] = np.where(npred + ngt > 0, fs, np.nan)
        b = np.where(biou[:, 1] > 0, biou[:, 0] / np.maximum(biou[:, 1], 1), np.nan)
    return iou, f, b


def image_and_labels(seed: int = 0):
    """A 40x48 Voronoi label map and an image coloured by it."""
    labels = voronoi_labels((40, 48), 6, 5, seed=seed)
    image = np.stack([labels.astype(np.int64) * 40 % 256] * 3, -1).astype(np.uint8)
    return image, labels


def write_png_at(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def cityscapes_and_ade20k_folders(root, count: int = 8):
    """Folders laid out exactly as the two datasets ship: Cityscapes' leftImg8bit/ + gtFine/ (labelIds and
    labelTrainIds), ADE20K's ADEChallengeData2016/images + annotations (0 = "other", not scored)."""
    from segfix.data.datasets import CITYSCAPES_LABEL_TO_TRAIN

    to_train = np.full(256, 255, np.uint8)
    for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
        to_train[label_id] = train_id
    label_ids = np.array(
        [7, 8, 11, 21, 23, 24, 26, 0]
    )  # road, sidewalk, building, vegetation, sky, person, car, unlabeled
    for i in range(count):
        city = ("aachen", "bremen")[i % 2]
        stem = f"{city}_{i:06d}_000019"
        segments = voronoi_labels((64, 96), 6, len(label_ids), seed=i)
        ids = label_ids[segments].astype(np.uint8)
        image = np.stack([ids * 9, ids * 5, 255 - ids * 7], -1).astype(np.uint8)
        write_png_at(root / "cityscapes" / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png", image)
        write_png_at(root / "cityscapes" / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", ids)
        write_png_at(
            root / "cityscapes" / "gtFine" / "train" / city / f"{stem}_gtFine_labelTrainIds.png", to_train[ids]
        )
        ade = voronoi_labels((64, 96), 6, 5, seed=100 + i).astype(np.uint8)  # 0 = other, 1..4 = classes
        base = root / "ade20k" / "ADEChallengeData2016"
        write_png_at(base / "images" / "training" / f"ADE_train_{i + 1:08d}.jpg", np.stack([ade * 50] * 3, -1))
        write_png_at(base / "annotations" / "training" / f"ADE_train_{i + 1:08d}.png", ade)


def noise_and_blob_maps(seed: int, classes: int, *, blob_size: int, min_side: int = 1, count: int = 12):
    """``count`` random int64 label maps of random sizes up to 39 x 39: every other one pure noise, the rest
    median-filtered (``blob_size``) into blobs with thin bridges and wide interiors, for ops checked against
    scipy."""
    rng = np.random.default_rng(seed)
    for trial in range(count):
        h, w = rng.integers(min_side, 40, 2)
        labels = rng.integers(0, classes, (h, w)).astype(np.int64)
        yield ndimage.median_filter(labels, blob_size) if trial % 2 else labels
