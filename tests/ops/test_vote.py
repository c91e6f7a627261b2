"""vote_labels: the direction vote, against a per-pixel float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import segfix
from helpers import voronoi_labels


def reference_vote(labels, prob, moving, scale, min_vote_share, ignore_index):
    """Pixel by pixel, in float64: the label with the largest summed direction probability among the
    candidates ``scale * v_d`` away (clamped); ignore candidates get no vote; ties go to the first direction."""
    h, w = labels.shape
    vectors = segfix.direction_vectors(prob.shape[0]).astype(np.int64) * scale
    out = labels.copy()
    for y, x in zip(*np.nonzero(moving)):
        if labels[y, x] == ignore_index:
            continue
        candidates = [labels[min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)] for dy, dx in vectors]
        weights = [0.0 if c == ignore_index else float(p) for c, p in zip(candidates, prob[:, y, x].astype(np.float64))]
        scores = [sum(wt for c2, wt in zip(candidates, weights) if c2 == c) for c in candidates]
        best = int(np.argmax(scores))
        if scores[best] > min_vote_share:
            out[y, x] = candidates[best]
    return out


def random_inputs(seed: int, shape=(24, 30), num_directions: int = 8):
    rng = np.random.default_rng(seed)
    labels = voronoi_labels(shape, 8, 5, seed=seed).astype(np.int64)
    labels[rng.random(shape) < 0.05] = 255
    logits = rng.normal(size=(num_directions, *shape)) * 2
    prob = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    moving = rng.random(shape) < 0.4
    return labels, prob.astype(np.float32), moving


@pytest.mark.parametrize("num_directions", [4, 8, 16])
@pytest.mark.parametrize("scale", [1, 2, 3])
@pytest.mark.parametrize("min_vote_share", [0.0, 0.5])
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_matches_reference(num_directions, scale, min_vote_share, backend):
    labels, prob, moving = random_inputs(scale * 10 + num_directions, num_directions=num_directions)
    out = segfix.vote_labels(labels, prob, moving, scale=scale, min_vote_share=min_vote_share, backend=backend)
    np.testing.assert_array_equal(out, reference_vote(labels, prob, moving, scale, min_vote_share, 255))


def test_pooling_beats_the_argmax():
    # Left has the single largest probability, but up-right and right (0.35 + 0.3) both reach class 1.
    labels = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]])
    prob = np.zeros((8, 3, 4), np.float32)
    prob[0], prob[3], prob[4] = 0.35, 0.3, 0.35 - 0.05
    moving = np.zeros((3, 4), bool)
    moving[1, 1] = True
    out = segfix.vote_labels(labels, prob, moving)
    assert out[1, 1] == 1 and prob[:, 1, 1].argmax() == 0
    expected = labels.copy()
    expected[1, 1] = 1
    np.testing.assert_array_equal(out, expected)


def test_only_moving_pixels_change_and_labels_come_from_the_map():
    labels, prob, moving = random_inputs(1)
    out = segfix.vote_labels(labels, prob, moving, scale=2)
    assert not (out != labels)[~moving].any()
    assert set(np.unique(out)) <= set(np.unique(labels))


def test_ignore_is_never_copied_or_changed():
    labels = np.full((5, 5), 255, np.int64)
    labels[2, 2] = 3
    labels[0, 0] = 255
    prob = np.full((8, 5, 5), 1 / 8, np.float32)
    out = segfix.vote_labels(labels, prob, np.ones((5, 5), bool))
    np.testing.assert_array_equal(out, labels)  # every candidate of (2, 2) is ignore: it keeps its label


def test_nothing_moving_is_the_identity():
    labels, prob, _ = random_inputs(2)
    np.testing.assert_array_equal(segfix.vote_labels(labels, prob, np.zeros(labels.shape, bool)), labels)


@pytest.mark.filterwarnings("error")
def test_read_only_inputs_are_accepted_and_left_alone():
    labels, prob, moving = random_inputs(5)
    expected = reference_vote(labels, prob, moving, 1, 0.0, 255)
    before = labels.copy()
    for array in (labels, prob, moving):
        array.flags.writeable = False
    np.testing.assert_array_equal(segfix.vote_labels(labels, prob, moving), expected)
    np.testing.assert_array_equal(labels, before)


def test_batch_equals_one_by_one():
    items = [random_inputs(s) for s in (3, 4)]
    batch = segfix.vote_labels(
        np.stack([i[0] for i in items]), np.stack([i[1] for i in items]), np.stack([i[2] for i in items]), scale=2
    )
    for k, (labels, prob, moving) in enumerate(items):
        np.testing.assert_array_equal(batch[k], segfix.vote_labels(labels, prob, moving, scale=2))


def test_torch_matches_numpy_and_keeps_dtype_and_device(device):
    labels, prob, moving = random_inputs(5)
    expected = segfix.vote_labels(labels.astype(np.uint8), prob, moving, scale=2)
    out = segfix.vote_labels(
        torch.from_numpy(labels.astype(np.uint8)).to(device),
        torch.from_numpy(prob).to(device),
        torch.from_numpy(moving).to(device),
        scale=2,
    )
    assert out.dtype == torch.uint8 and out.device.type == device.type
    np.testing.assert_array_equal(out.cpu().numpy(), expected)
    assert expected.dtype == np.uint8


def test_errors_name_what_was_expected():
    labels, prob, moving = random_inputs(6)
    with pytest.raises(TypeError, match="integer dtype"):
        segfix.vote_labels(labels.astype(np.float32), prob, moving)
    with pytest.raises(ValueError, match="direction_prob: expected shape"):
        segfix.vote_labels(labels, prob[:, :-1], moving)
    with pytest.raises(ValueError, match="moving: expected a boolean mask"):
        segfix.vote_labels(labels, prob, moving.astype(np.uint8))
    with pytest.raises(ValueError, match="scale: expected a positive integer"):
        segfix.vote_labels(labels, prob, moving, scale=0)
    with pytest.raises(ValueError, match="label_map"):
        segfix.vote_labels(labels[None, None], prob, moving)


def test_iterated_votes_equal_votes_in_a_row():
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 4, (2, 10, 12))
    prob = torch.softmax(torch.from_numpy(rng.normal(size=(2, 8, 10, 12))), 1).numpy()
    moving = rng.random((2, 10, 12)) < 0.6
    in_a_row = labels
    for _ in range(3):
        in_a_row = segfix.vote_labels(in_a_row, prob, moving, scale=1, min_vote_share=0.2)
    np.testing.assert_array_equal(
        segfix.vote_labels(labels, prob, moving, scale=1, min_vote_share=0.2, iterations=3), in_a_row
    )
    with pytest.raises(ValueError, match="iterations"):
        segfix.vote_labels(labels, prob, moving, iterations=0)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64])
@pytest.mark.parametrize("ignore_index", [255, None])
def test_the_compiled_kernel_equals_the_torch_vote(dtype, ignore_index):
    """Probabilities in 1/64ths: every score is exact in float32, so ties fall the same way on both paths."""
    rng = np.random.default_rng(21)
    labels = rng.integers(0, 6, (3, 40, 52))
    labels[rng.random(labels.shape) < 0.05] = 255
    counts = rng.multinomial(64, np.ones(8) / 8, size=(3, 40, 52)).astype(np.float32) / 64  # (3, 40, 52, 8)
    prob = np.ascontiguousarray(np.moveaxis(counts, -1, 1))
    moving = rng.random(labels.shape) < 0.5
    labels = labels.astype(dtype)
    for iterations, min_vote_share in [(1, 0.0), (3, 0.25), (4, 0.5)]:
        kwargs = dict(scale=2, min_vote_share=min_vote_share, ignore_index=ignore_index, iterations=iterations)
        compiled = segfix.vote_labels(labels, prob, moving, backend="numba", **kwargs)
        np.testing.assert_array_equal(compiled, segfix.vote_labels(labels, prob, moving, backend="torch", **kwargs))
        assert compiled.dtype == dtype
    rows = torch.from_numpy(prob).permute(0, 2, 3, 1)[torch.from_numpy(moving)]  # (K, D), row-major
    on_tensors = segfix.vote_labels(torch.from_numpy(labels), rows, torch.from_numpy(moving), backend="numba")
    np.testing.assert_array_equal(on_tensors.numpy(), segfix.vote_labels(labels, prob, moving, backend="torch"))


@pytest.mark.parametrize(("shape", "scale", "num_directions"), [((6, 9), 1, 8), ((7, 5), 3, 16), ((12, 30), 2, 4)])
def test_the_compiled_votes_in_a_row_redo_only_what_changed_and_equal_the_torch_votes(shape, scale, num_directions):
    """The kernel votes again only where a candidate changed; on small maps most candidates are clamped onto the
    border (several pixels reach one border pixel), which the re-vote must find too. Every iteration count up to
    eight gives the torch vote's labels, which redo every pixel."""
    rng = np.random.default_rng(sum(shape) + scale)
    for trial in range(6):
        labels = rng.integers(0, 3, (2, *shape)).astype(np.uint8)
        counts = rng.multinomial(32, np.ones(num_directions) / num_directions, size=(2, *shape)) / 32
        prob = np.ascontiguousarray(np.moveaxis(counts.astype(np.float32), -1, 1))
        moving = rng.random(labels.shape) < 0.7
        for iterations in range(1, 9):
            kwargs = dict(scale=scale, iterations=iterations, ignore_index=2 if trial % 2 else None)
            compiled = segfix.vote_labels(labels, prob, moving, backend="numba", **kwargs)
            np.testing.assert_array_equal(compiled, segfix.vote_labels(labels, prob, moving, backend="torch", **kwargs))


def test_nan_rows_of_ignore_pixels_are_never_read_but_a_voting_pixel_s_are_refused():
    labels = np.array([[0, 255, 1, 1]], np.uint8)
    moving = np.array([[False, True, True, False]])
    rows = np.full((2, 8), 0.125, np.float32)
    rows[0] = np.nan  # the ignore pixel's row
    for backend in ("numba", "torch"):
        out = segfix.vote_labels(labels, rows, moving, backend=backend)
        np.testing.assert_array_equal(out, segfix.vote_labels(labels, rows[[1, 1]], moving, backend="torch"))
        with pytest.raises(ValueError, match="expected finite probabilities"):
            segfix.vote_labels(labels, rows[::-1].copy(), moving, backend=backend)


def test_an_unknown_backend_is_named():
    labels, prob, moving = random_inputs(7)
    with pytest.raises(ValueError, match=r"backend: expected one of \('auto', 'numba', 'torch'\), got 'cuda'"):
        segfix.vote_labels(labels, prob, moving, backend="cuda")


def test_auto_votes_with_torch_until_the_compiled_kernel_is_set_up_in_the_background():
    """A fresh process does not wait for numba's start on its first refine: 'auto' votes with torch (the same
    labels) while a background thread sets the kernel up, then with the kernel."""
    import subprocess
    import sys

    pytest.importorskip("numba")
    code = (
        "import numpy as np, segfix\n"
        "from segfix.ops import kernels\n"
        "labels = np.array([[0, 0, 1, 1, 2]], np.uint8)\n"
        "prob = np.zeros((8, 1, 5), np.float32); prob[4] = 1.0\n"
        "moving = np.array([[False, True, False, True, False]])\n"
        "first = segfix.vote_labels(labels, prob, moving)\n"
        "ready_at_first = kernels.vote_kernel_ready()\n"
        "assert kernels._VOTE_WARM.wait(60)\n"
        "later = segfix.vote_labels(labels, prob, moving)\n"
        "loaded = all(len(k.signatures) >= 2 for k in (kernels.vote_kernel, kernels.mark_kernel))\n"
        "print(ready_at_first, loaded, first.tolist(), later.tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 2)
    # set up means both kernels of votes in a row, for uint8 and int64 maps: no refine waits for a compile
    assert out[:2] == ["False", "True"]
    assert out[2].strip() == "[[0, 1, 1, 2, 2]] [[0, 1, 1, 2, 2]]"  # both ways: each takes its right neighbour
