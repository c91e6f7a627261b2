"""Train a small semantic segmentation network whose predictions on held-out images stand in for "a real model's
coarse output" when SegFix settings are chosen.

SegFix is judged on real networks' predictions, but held-out *training* images have none. The block-average
stand-in of :func:`segfix.training.tuning.coarse_proxy` erases thin structures and misplaces every edge by a few pixels,
which is not how a trained network errs: a real one is right on most edges and wrong near some, and finds
some poles and misses others. This tool trains such a network (EfficientNet-Lite0 from ImageNet, a light FPN,
output stride 8 upsampled bilinearly, like many deployed segmenters) on the images ``segfix train --holdout``
keeps, and writes its predictions for the held-out ones, so that ``segfix tune --coarse`` can choose settings on
the errors of a real network without touching the validation set.

Run (about an hour on 2 CPU cores with bf16)::

    python tools/train_coarse_net.py --root ../shared/data/camvid --holdout 10 --output runs/coarse-lite0
    # resumable: the same command with --resume continues from runs/coarse-lite0/checkpoint.pt

``--input-scale 0.5`` trains and predicts on half-size frames (the predictions upsampled back), a weaker network
that misses most poles, as light real-time networks do (ESPNet's pole IoU on CamVid val is 8 %): settings
chosen on both kinds of errors do not lean on one network's.

Writes ``OUTPUT/holdout/<name>.png`` (class ids, void = 11 as CamVid stores it) for the held-out images and
``OUTPUT/val/<name>.png`` for the validation images (only to report how good the network is; never to tune).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segfix.data.datasets import CamVid, parse_holdout
from segfix.data.files import atomic_write, write_png
from segfix.metrics import SegmentationMetrics
from segfix.network.precision import autocast_context, resolve_precision
from segfix.network.segfix_net import create_backbone
from segfix.training.imagenet import load_imagenet_backbone

IGNORE = 255
VOID = 11


class CoarseNet(nn.Module):
    """Lite0 levels at strides 8/16/32, summed top-down at width 64, classified at stride 8."""

    def __init__(self, num_classes: int, backbone: str = "tf_efficientnet_lite0", width: int = 64) -> None:
        super().__init__()
        self.backbone = create_backbone(backbone, out_indices=(2, 3, 4))
        channels = self.backbone.feature_info.channels()
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
            for c in channels
        )
        self.head = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        x = self.lateral[-1](features[-1])
        for i in range(len(features) - 2, -1, -1):
            lateral = self.lateral[i](features[i])
            x = lateral + F.interpolate(x, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.head(x)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def _normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` -> the Lite weights' input range ``[-1, 1]``."""
    return images.float().div(127.5).sub(1.0)


def _batch(
    images: np.ndarray, labels: np.ndarray, indices: np.ndarray, rng: np.random.Generator, crop: tuple, base: float
):
    """Random scale (0.75-1.5 times ``base``), crop (padded with ignore), flip and brightness/contrast jitter."""
    out_x, out_y = [], []
    ch, cw = crop
    for i in indices:
        x = torch.from_numpy(np.array(images[i])).permute(2, 0, 1)[None].float()
        y = torch.from_numpy(labels[i])[None, None].float()
        s = base * rng.uniform(0.75, 1.5)
        size = (round(x.shape[-2] * s), round(x.shape[-1] * s))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        y = F.interpolate(y, size=size, mode="nearest")
        ph, pw = max(ch - size[0], 0), max(cw - size[1], 0)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), value=127.5)
            y = F.pad(y, (0, pw, 0, ph), value=IGNORE)
        top = int(rng.integers(0, x.shape[-2] - ch + 1))
        left = int(rng.integers(0, x.shape[-1] - cw + 1))
        x, y = x[..., top : top + ch, left : left + cw], y[..., top : top + ch, left : left + cw]
        if rng.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        x = (x - 127.5) * rng.uniform(0.8, 1.2) + 127.5 + rng.uniform(-20, 20)
        out_x.append(x.clamp(0, 255))
        out_y.append(y)
    return torch.cat(out_x), torch.cat(out_y)[:, 0].long()


def _load(dataset) -> tuple[np.ndarray, np.ndarray, list[str]]:
    samples = [dataset[i] for i in range(len(dataset))]
    labels = np.stack([np.where(s.label == dataset.ignore_index, IGNORE, s.label) for s in samples])
    return np.stack([s.image for s in samples]), labels, [s.name for s in samples]


@torch.inference_mode()
def predict(net: CoarseNet, image: np.ndarray, precision: str, scale: float = 1.0) -> np.ndarray:
    x = _normalise(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None])
    size = x.shape[-2:]
    if scale != 1.0:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    with autocast_context(torch.device("cpu"), precision):
        logits = net(x)
    logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].numpy().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="CamVid root (SegNet layout)")
    parser.add_argument("--holdout", default="10", help="every N-th training image, or a file-name prefix")
    parser.add_argument("--output", required=True)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=150)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--input-scale", type=float, default=1.0, help="frames resized by this for the network")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    kept, held = CamVid(args.root, "train").split(parse_holdout(args.holdout))
    images, labels, _ = _load(kept)
    precision = resolve_precision("auto", torch.device("cpu"))
    net = CoarseNet(kept.num_classes)
    load_imagenet_backbone(net.backbone, "tf_efficientnet_lite0")
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    step = 0
    checkpoint = output / "checkpoint.pt"
    if args.resume and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        step = int(saved["step"])
    net.train()
    start = time.perf_counter()
    while step < args.iterations:
        rng = np.random.default_rng([args.seed, step])
        crop = (round(360 * args.input_scale), round(480 * args.input_scale))
        x, y = _batch(images, labels, rng.integers(0, len(images), args.batch_size), rng, crop, args.input_scale)
        for group in opt.param_groups:
            group["lr"] = args.lr * (1 - step / args.iterations) ** 0.9
        with autocast_context(torch.device("cpu"), precision):
            logits = net(_normalise(x))
        loss = F.cross_entropy(logits.float(), y, ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 10 == 0:
            rate = (time.perf_counter() - start) / 10
            start = time.perf_counter()
            print(f"step {step}/{args.iterations} loss {loss.item():.3f} {rate:.2f} s/step", flush=True)
        if step % args.checkpoint_every == 0 or step == args.iterations:
            payload = {"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step}
            atomic_write(checkpoint, lambda tmp, payload=payload: torch.save(payload, tmp))
    net.eval()
    scores = {}
    for split, dataset in (("holdout", held), ("val", CamVid(args.root, "val"))):
        metrics = SegmentationMetrics(dataset.num_classes, ignore_index=dataset.ignore_index, tolerances=(1,))
        folder = output / split
        folder.mkdir(exist_ok=True)
        for i in range(len(dataset)):
            sample = dataset[i]
            prediction = predict(net, sample.image, precision, args.input_scale)
            metrics.update(prediction, sample.label)
            write_png(folder / f"{sample.name}.png", prediction)
        result = metrics.compute()
        scores[split] = {"miou": result.miou * 100, "f1px": result.mean_boundary_f[1] * 100}
        print(f"{split}: {len(dataset)} images, mIoU {scores[split]['miou']:.2f}, F@1px {scores[split]['f1px']:.2f}")
    atomic_write(output / "scores.json", lambda tmp: tmp.write_text(json.dumps(scores, indent=1)))


if __name__ == "__main__":
    main()
