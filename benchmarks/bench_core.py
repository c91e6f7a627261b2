"""Speed of the model-free core on a 1024x2048 label map with 19 classes.

* ``shift_labels`` (uint8 labels, int8 offsets, 10 % boundary pixels) against its memory-traffic floor:
  (bytes read + bytes written) / bandwidth of a large ``np.copyto`` measured in the same run, where the copy's
  bandwidth also counts its bytes read + written. Goal: within 2x, for a boundary band and for the same share of
  moving pixels scattered at random.
* ``vote_labels`` against the argmax rule it replaces (argmax + ``direction_to_offset`` + ``shift_labels``).
* ``boundary_targets`` against the plain per-class scipy reference (one EDT + two float64 correlations per
  class), producing the same output. Target: at least 3x faster.
* ``thin_parts`` (the thin-part guard) against scipy's per-class ``binary_opening``, the same mask, and against
  the vote it guards. Target: faster than scipy and under the vote's time.

Run: ``python benchmarks/bench_core.py`` (``--quick`` for a smaller map).
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage

import segfix
from segfix.ops import kernels
from segfix.ops.shift import shift_labels

from _common import machine, median_seconds, print_table, voronoi_labels


def reference_targets(label, ignore_index=255, min_pixels=100, max_distance=5):
    ky, kx = segfix.gradient_kernels()
    depth = np.zeros(label.shape)
    gy = np.zeros(label.shape)
    gx = np.zeros(label.shape)
    values, counts = np.unique(label, return_counts=True)
    for c, n in zip(values, counts):
        if c == ignore_index or n < min_pixels:
            continue
        mask = label == c
        d = ndimage.distance_transform_edt(mask)
        depth += d
        gy += np.where(mask, ndimage.correlate(d, ky, mode="constant"), 0.0)
        gx += np.where(mask, ndimage.correlate(d, kx, mode="constant"), 0.0)
    angle = np.degrees(np.arctan2(gy, gx))
    return depth, depth <= max_distance, segfix.angle_to_direction(angle), np.hypot(gy, gx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="512x1024 instead of 1024x2048")
    args = parser.parse_args()
    shape = (512, 1024) if args.quick else (1024, 2048)
    print(f"# segfix core benchmark: {shape[0]}x{shape[1]}, 19 classes; {machine()}")
    print(f"# command: python benchmarks/bench_core.py{' --quick' if args.quick else ''}")

    # A blobby scene whose 5-px boundary band covers about 10 % of the pixels.
    label = voronoi_labels(shape, 60 if not args.quick else 30, 19, seed=0)
    targets = segfix.boundary_targets(label)
    offsets = targets.offsets()
    share = targets.boundary.mean()

    big = np.ones(256 * 2**20, np.uint8)
    dst = np.empty_like(big)
    copy_s = median_seconds(lambda: np.copyto(dst, big), repeat=51)
    bandwidth = 2 * big.nbytes / copy_s  # read + write
    traffic = label.nbytes + offsets.nbytes + label.nbytes  # read labels + offsets, write labels
    floor = traffic / bandwidth
    rows = []
    impls = [("numpy gather (sparse)", lambda: shift_labels(label, offsets, scale=2, backend="numpy"))]
    if kernels.HAVE_NUMBA:
        impls.insert(0, ("numba kernel (default)", lambda: shift_labels(label, offsets, scale=2, backend="numba")))
    import torch

    lt, ot = torch.from_numpy(label), torch.from_numpy(offsets)
    impls.append(("CPU torch tensors (default: the numba kernel in place)", lambda: shift_labels(lt, ot, scale=2)))
    impls.append(("torch dense gather (CPU)", lambda: shift_labels(lt, ot, scale=2, backend="torch")))
    for name, fn in impls:
        t = median_seconds(fn, repeat=201)  # sub-millisecond: many runs, so that a busy moment moves no median
        rows.append([name, f"{t * 1e3:.2f}", f"{floor * 1e3:.2f}", f"{t / floor:.2f}x"])
    if kernels.HAVE_NUMBA:
        # Worst case for the default kernel: the same share of moving pixels scattered at random, not in bands.
        rng = np.random.default_rng(0)
        scattered = np.zeros_like(offsets)
        moving = rng.random(shape) < share
        scattered[:, moving] = rng.integers(-1, 2, (2, int(moving.sum())))
        t = median_seconds(lambda: shift_labels(label, scattered, scale=2, backend="numba"), repeat=201)
        rows.append(["numba kernel, scattered offsets", f"{t * 1e3:.2f}", f"{floor * 1e3:.2f}", f"{t / floor:.2f}x"])
    print(
        f"\nmemory copy bandwidth (read+write): {bandwidth / 1e9:.1f} GB/s; boundary pixels: {share:.1%}; "
        f"traffic {traffic / 2**20:.1f} MiB"
    )
    title = "shift_labels, scale 2 (goal: <= 2x the floor, band and scattered)"
    print_table(title, ["implementation", "median ms", "floor ms", "ratio"], rows)

    # The direction vote against the argmax rule it replaces, both from the same direction probabilities.
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(8, *shape)).astype(np.float32)
    prob = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    moving = targets.boundary

    def argmax_rule():
        field = segfix.direction_to_offset(prob.argmax(0), moving)
        return segfix.shift_labels(label, field, scale=2)

    argmax_s = median_seconds(argmax_rule, repeat=5, warmup=1)
    vote_s = median_seconds(lambda: segfix.vote_labels(label, prob, moving, scale=2), repeat=5, warmup=1)
    print_table(
        "vote_labels vs the argmax rule (from (8, H, W) direction probabilities, 10 % moving pixels)",
        ["rule", "median ms", "ratio"],
        [
            ["argmax direction + shift_labels", f"{argmax_s * 1e3:.1f}", "1.00x"],
            ["vote_labels", f"{vote_s * 1e3:.1f}", f"{vote_s / argmax_s:.2f}x"],
        ],
    )

    thin_rows = []
    for radius in (1, 2):
        square = np.ones((2 * radius + 1, 2 * radius + 1), bool)

        def scipy_thin(radius=radius, square=square):
            out = np.zeros(label.shape, bool)
            for c in np.unique(label):
                mask = label == c
                out |= mask & ~ndimage.binary_opening(mask, structure=square)
            return out

        scipy_s = median_seconds(scipy_thin, repeat=3, warmup=1)
        thin_s = median_seconds(lambda radius=radius: segfix.thin_parts(label, radius), repeat=5, warmup=1)
        same = np.array_equal(segfix.thin_parts(label, radius), scipy_thin())
        thin_rows.append(
            [
                radius,
                f"{scipy_s * 1e3:.1f}",
                f"{thin_s * 1e3:.1f}",
                f"{scipy_s / thin_s:.1f}x",
                f"{thin_s / vote_s:.2f}x",
                same,
            ]
        )
    print_table(
        "thin_parts vs scipy's per-class binary_opening (target: faster, same mask; a fraction of the vote)",
        ["radius", "scipy ms", "thin_parts ms", "speed-up", "vs vote_labels", "same mask"],
        thin_rows,
    )

    ref_s = median_seconds(lambda: reference_targets(label), repeat=3, warmup=1)
    ours_s = median_seconds(lambda: segfix.boundary_targets(label), repeat=5, warmup=1)
    depth, boundary, direction, magnitude = reference_targets(label)
    same_depth = np.array_equal(targets.depth, depth.astype(np.float32))
    same_boundary = np.array_equal(targets.boundary, boundary & (label != 255))
    defined = magnitude > 1e-9
    direction_agreement = (targets.direction[defined] == direction[defined]).mean()
    print_table(
        "boundary_targets (target: >= 3x faster than the reference, same output)",
        ["implementation", "median s", "speed-up"],
        [
            ["per-class scipy reference", f"{ref_s:.3f}", "1.00x"],
            ["segfix.boundary_targets", f"{ours_s:.3f}", f"{ref_s / ours_s:.2f}x"],
        ],
    )
    print(
        f"same depth: {same_depth}; same boundary: {same_boundary}; direction agreement where the gradient is "
        f"defined: {direction_agreement:.6%}"
    )


if __name__ == "__main__":
    main()
