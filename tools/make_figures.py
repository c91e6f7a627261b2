"""Draw the documentation's figures from data the project may publish: synthetic label maps and the measured
numbers kept in docs/data/. No CamVid image or label is read.

    python tools/make_figures.py            # writes docs/images/targets.png and docs/images/camvid-v5-gains.png

* ``targets.png``: what SegFix learns, on a synthetic map: the boundary band and each band pixel's direction
  (one of 8, pointing into its own segment), beside the key of the 8 direction classes.
* ``camvid-v5-gains.png``: per-class IoU and boundary-F change of the recommended model on CamVid val (the
  table in docs/results.md, kept as numbers in docs/data/camvid-lite0-v5-val.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import segfix
from segfix import viz

ROOT = Path(__file__).resolve().parents[1]


def _arrow(draw: ImageDraw.ImageDraw, start, end, colour, width: int) -> None:
    draw.line([start, end], fill=colour, width=width)
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = max(np.hypot(dx, dy), 1e-6)
    ux, uy = dx / length, dy / length
    head = max(4.0, 0.35 * length)
    left = (end[0] - head * ux + head * 0.5 * uy, end[1] - head * uy - head * 0.5 * ux)
    right = (end[0] - head * ux - head * 0.5 * uy, end[1] - head * uy + head * 0.5 * ux)
    draw.polygon([end, left, right], fill=colour)


def targets_figure(cell: int = 22) -> Image.Image:
    """A 16 x 24 synthetic map: classes as pale colours, the band outlined, directions as arrows."""
    labels = np.zeros((16, 24), np.uint8)
    labels[:, 11:] = 1
    labels[4:12, 4:9] = 2  # a box inside class 0
    labels[9:, 16:] = 2
    targets = segfix.boundary_targets(labels, max_distance=2, min_pixels=0)
    vectors = segfix.direction_vectors(8)
    pale = (0.35 * viz.palette(3, "camvid")[:3] + 0.65 * 255).astype(np.uint8)
    arrow_colours = viz.direction_wheel(np.arange(8)[None])[0]
    h, w = labels.shape
    canvas = Image.new("RGB", (w * cell, h * cell), "white")
    draw = ImageDraw.Draw(canvas)
    for y in range(h):
        for x in range(w):
            box = [x * cell, y * cell, (x + 1) * cell - 1, (y + 1) * cell - 1]
            band = bool(targets.boundary[y, x])
            draw.rectangle(box, fill=tuple(int(v) for v in pale[labels[y, x]]), outline=(90, 90, 90) if band else None)
            d = int(targets.direction[y, x])
            if band and d >= 0:
                cy, cx = (y + 0.5) * cell, (x + 0.5) * cell
                vy, vx = vectors[d] / np.hypot(*vectors[d])
                end = (cx + vx * 0.42 * cell, cy + vy * 0.42 * cell)
                _arrow(
                    draw, (cx - vx * 0.3 * cell, cy - vy * 0.3 * cell), end, tuple(int(v) for v in arrow_colours[d]), 2
                )
    key = _direction_key(vectors, arrow_colours, size=h * cell)
    font = viz.caption_font(w * cell * 3 // 4)
    title = 48
    sheet = Image.new("RGB", (canvas.width + key.width + 24, canvas.height + title), "white")
    sheet.paste(canvas, (0, title))
    sheet.paste(key, (canvas.width + 24, title))
    text = ImageDraw.Draw(sheet)
    text.text((4, 10), "the boundary band (outlined) and its directions", fill=(0, 0, 0), font=font)
    text.text((canvas.width + 30, 10), "the 8 classes (dy, dx)", fill=(0, 0, 0), font=font)
    return sheet


def _direction_key(vectors: np.ndarray, colours: np.ndarray, size: int) -> Image.Image:
    key = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(key)
    font = viz.caption_font(size)
    c = size / 2
    for k, ((dy, dx), colour) in enumerate(zip(vectors, colours)):
        norm = float(np.hypot(dy, dx))
        end = (c + dx / norm * size * 0.3, c + dy / norm * size * 0.3)
        _arrow(draw, (c, c), end, tuple(int(v) for v in colour), 4)
        label = (c + dx / norm * size * 0.42, c + dy / norm * size * 0.42)
        text = f"{k} ({dy:+d}, {dx:+d})"
        width = draw.textlength(text, font=font)
        draw.text((label[0] - width / 2, label[1] - 10), text, fill=(0, 0, 0), font=font)
    return key


def gains_figure(table: dict) -> Image.Image:
    """Horizontal bars of the per-class change (points) of IoU and boundary F@1px, from zero."""
    series = [("IoU change (points)", table["iou_delta"], (40, 110, 200))]
    series.append(("F@1px change (points)", table["f1_delta"], (230, 140, 30)))
    return bars_figure(table["title"], table["classes"], series, label_width=190, number="{:+.2f}")


def speed_figure(table: dict) -> Image.Image:
    """Seconds per refine of each setting, as bars."""
    series = [("seconds per 1024x2048 refine", table["seconds"], (60, 150, 90))]
    return bars_figure(table["title"], table["classes"], series, label_width=470, number="{:.3f} s")


def bars_figure(title: str, rows: list, series: list, *, label_width: int, number: str) -> Image.Image:
    """Horizontal bars, one group per row and one bar per series, from zero, with their values and a key."""
    classes = rows
    values = [v for _, vs, _ in series for v in vs]
    low, high = min(0.0, min(values)), max(0.0, max(values))
    width, row, margin = 1200, max(44, 24 * len(series) + 6), 110
    scale = (width - label_width - margin) / (high - low)
    font, small = viz.caption_font(width // 2), viz.caption_font(width // 3)
    height = 70 + row * len(classes) + 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    zero = label_width - low * scale
    draw.text((10, 12), title, fill=(0, 0, 0), font=font)
    for i, name in enumerate(classes):
        y = 70 + i * row
        draw.text((10, y + 10), name, fill=(0, 0, 0), font=font)
        for j, (_, series_values, colour) in enumerate(series):
            value = series_values[i]
            top = y + 3 + j * (row - 6) / len(series)
            x0, x1 = sorted((zero, zero + value * scale))
            draw.rectangle([x0, top, x1, top + (row - 6) / len(series) - 3], fill=colour)
            text = number.format(value)
            at = zero + value * scale + 6 if value >= 0 else zero + value * scale - 6 - draw.textlength(text, small)
            draw.text((at, top - 1), text, fill=colour, font=small)
    draw.line([(zero, 62), (zero, height - 44)], fill=(0, 0, 0), width=2)
    x = label_width
    for name, _, colour in series:
        draw.rectangle([x, height - 34, x + 18, height - 16], fill=colour)
        text = name
        draw.text((x + 26, height - 38), text, fill=(0, 0, 0), font=font)
        x += 26 + int(draw.textlength(text, font=font)) + 40
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(ROOT / "docs" / "images"), help="folder for the PNG files")
    out = Path(parser.parse_args(argv).output)
    out.mkdir(parents=True, exist_ok=True)
    targets_figure().save(out / "targets.png")
    table = json.loads((ROOT / "docs" / "data" / "camvid-lite0-v5-val.json").read_text())
    gains_figure(table).save(out / "camvid-v5-gains.png")
    speed_figure(json.loads((ROOT / "docs" / "data" / "bench-model-v5.json").read_text())).save(out / "v5-speed.png")
    print(f"wrote {out / 'targets.png'}, {out / 'camvid-v5-gains.png'} and {out / 'v5-speed.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
