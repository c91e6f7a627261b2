"""Property and fuzz tests over the public functions and the command line (hypothesis).

Inputs range over dtypes, shapes (empty and one-pixel included), strides (mirrored and transposed views),
byte orders, values at the limits of their dtype, NaN/inf and absurd arguments. Every call must either
return a result that keeps the invariants, or raise a ``ValueError``/``TypeError`` whose message names the
argument at fault. Invariants:

* every output label occurs in the input;
* a zero offset (or no moving pixel) is the identity;
* ignore pixels are never written and the ignore label is never copied;
* numpy with numba, numpy without it, torch and a pure-Python reference agree.

The default profile keeps this a few seconds of the suite; ``pytest tests/test_fuzz.py
--hypothesis-profile thorough`` runs 50x as many cases.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import segfix
from segfix.cli import main
from segfix.jobs import formats
from segfix.metrics import SegmentationMetrics
from segfix.synthetic import reference_walk

LABEL_DTYPES = ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool"]
OFFSET_DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]


def _limits(dtype: str) -> tuple[int, int]:
    if dtype == "bool":
        return 0, 1
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


@st.composite
def arrays(draw, shape, dtype: str, *, small: bool = False):
    """An integer array of ``shape``: small values, or values drawn near both ends of the dtype."""
    lo, hi = _limits(dtype)
    if small:
        lo, hi = max(lo, 0), min(hi, 5)
    edges = [lo, hi, 0, 1, max(lo, -1), min(hi, 2)]
    value = st.one_of(st.integers(max(lo, 0), min(hi, 5)), st.sampled_from(edges), st.integers(lo, hi))
    count = int(np.prod(shape))
    flat = draw(st.lists(value, min_size=count, max_size=count))
    return np.array(flat, dtype=object).astype(dtype).reshape(shape)


@st.composite
def layouts(draw, array: np.ndarray) -> np.ndarray:
    """The same values in another memory layout: a mirrored view, a transposed copy's view, or swapped bytes."""
    kind = draw(st.sampled_from(["plain", "mirrored", "transposed", "big_endian"]))
    if kind == "mirrored" and array.ndim >= 2:
        return np.flip(np.flip(array, -1).copy(), -1)  # equal values, negative strides
    if kind == "transposed" and array.ndim >= 2:
        return np.swapaxes(np.swapaxes(array, -1, -2).copy(), -1, -2)
    if kind == "big_endian" and array.dtype.itemsize > 1:
        return array.astype(array.dtype.newbyteorder(">"))
    return array


@st.composite
def shift_cases(draw):
    h, w = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    batched = draw(st.booleans())
    n = draw(st.integers(1, 2)) if batched else None
    label_dtype = draw(st.sampled_from(LABEL_DTYPES))
    offset_dtype = draw(st.sampled_from(OFFSET_DTYPES))
    label_shape = (n, h, w) if batched else (h, w)
    offset_shape = (n, 2, h, w) if batched and draw(st.booleans()) else (2, h, w)
    labels = draw(layouts(draw(arrays(label_shape, label_dtype))))
    offsets = draw(layouts(draw(arrays(offset_shape, offset_dtype))))
    scale = draw(st.one_of(st.integers(1, 3), st.sampled_from([2**31, 2**62])))
    iterations = draw(st.integers(1, 3))
    return labels, offsets, scale, iterations


def _torch(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.astype(array.dtype.newbyteorder("="))))


def _as_int64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.to(torch.int64) if x.dtype != torch.uint64 else x.view(torch.int64)
        return x.numpy().astype(np.int64)
    return np.asarray(x).astype(np.int64)


@given(shift_cases())
def test_shift_labels_agrees_everywhere_and_only_copies(case):
    labels, offsets, scale, iterations = case
    expected = reference_walk(labels, offsets, scale, iterations)
    out = segfix.shift_labels(labels, offsets, scale=scale, iterations=iterations)
    assert out.dtype == labels.dtype and out.shape == labels.shape
    np.testing.assert_array_equal(out, expected)
    assert set(np.unique(out)) <= set(np.unique(labels))
    torch_out = segfix.shift_labels(_torch(labels), _torch(offsets), scale=scale, iterations=iterations)
    np.testing.assert_array_equal(_as_int64(torch_out), _as_int64(expected))
    zero = np.zeros_like(offsets)
    np.testing.assert_array_equal(segfix.shift_labels(labels, zero, scale=scale, iterations=iterations), labels)


@given(shift_cases(), st.sampled_from([255, 0, 1, -1, 256, 2**40, None]))
def test_refine_semantic_never_writes_or_copies_ignore(case, ignore):
    labels, offsets, scale, iterations = case
    if labels.dtype == np.bool_:  # a mask is no label map: refused by name, never read as 0/1 ids
        with pytest.raises(TypeError, match="^label_map: expected an integer dtype, got numpy.ndarray"):
            segfix.refine_semantic(labels, offsets, scale=scale, iterations=iterations, ignore_index=ignore)
        return
    if _has_unknown_negatives(labels, ignore):  # negative labels other than the ignore index: refused
        with pytest.raises(ValueError, match="^label_map: expected class ids >= 0"):
            segfix.refine_semantic(labels, offsets, scale=scale, iterations=iterations, ignore_index=ignore)
        return
    out = segfix.refine_semantic(labels, offsets, scale=scale, iterations=iterations, ignore_index=ignore)
    assert set(np.unique(out)) <= set(np.unique(labels))
    if ignore is not None:
        is_ignore = labels == ignore
        np.testing.assert_array_equal(out[is_ignore], labels[is_ignore])  # ignore pixels stay
        assert not ((out == ignore) & ~is_ignore).any()  # and the label is never copied
    torch_out = segfix.refine_semantic(
        _torch(labels), _torch(offsets), scale=scale, iterations=iterations, ignore_index=ignore
    )
    np.testing.assert_array_equal(_as_int64(torch_out), _as_int64(out))


def _has_unknown_negatives(labels: np.ndarray, ignore) -> bool:
    """Whether ``labels`` hold a negative value that is not the ignore label (as the dtype can hold it): the
    one input the refiners refuse. Worked out here, apart from the library's own check."""
    if labels.dtype.kind != "i" or labels.size == 0:
        return False
    info = np.iinfo(labels.dtype)
    held = ignore is not None and info.min <= ignore <= info.max
    negative = labels.astype(np.int64) < 0
    if held:
        negative &= labels.astype(np.int64) != ignore
    return bool(negative.any())


@st.composite
def vote_cases(draw):
    h, w = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    batched = draw(st.booleans())
    shape = (draw(st.integers(1, 2)), h, w) if batched else (h, w)
    dtype = draw(st.sampled_from([d for d in LABEL_DTYPES if d != "bool"]))
    labels = draw(layouts(draw(arrays(shape, dtype, small=draw(st.booleans())))))
    d = draw(st.sampled_from([4, 8, 16]))
    prob_shape = (shape[0], d, h, w) if batched else (d, h, w)
    count = int(np.prod(prob_shape))
    prob = np.array(draw(st.lists(st.floats(0, 1, width=32), min_size=count, max_size=count)), np.float32)
    moving = np.array(draw(st.lists(st.booleans(), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))), bool)
    return labels, prob.reshape(prob_shape), moving.reshape(shape), draw(st.integers(1, 3))


@given(vote_cases(), st.sampled_from([255, 0, 1, 256, None]), st.sampled_from([0.0, 0.3]))
def test_vote_labels_invariants(case, ignore, min_vote_share):
    labels, prob, moving, scale = case
    if labels.dtype == np.uint64 and (labels >= 2**63).any():  # torch, which votes, holds no larger id
        with pytest.raises(ValueError, match="^label_map: expected class ids below 2"):
            segfix.vote_labels(labels, prob, moving, scale=scale, ignore_index=ignore, min_vote_share=min_vote_share)
        return
    if _has_unknown_negatives(labels, ignore):
        with pytest.raises(ValueError, match="^label_map: expected class ids >= 0"):
            segfix.vote_labels(labels, prob, moving, scale=scale, ignore_index=ignore, min_vote_share=min_vote_share)
        return
    out = segfix.vote_labels(labels, prob, moving, scale=scale, ignore_index=ignore, min_vote_share=min_vote_share)
    assert out.dtype == labels.dtype and out.shape == labels.shape
    assert set(np.unique(out)) <= set(np.unique(labels))
    np.testing.assert_array_equal(out[~moving], labels[~moving])  # only moving pixels change
    if ignore is not None:
        is_ignore = labels == ignore
        np.testing.assert_array_equal(out[is_ignore], labels[is_ignore])
        assert not ((out == ignore) & ~is_ignore).any()
    torch_out = segfix.vote_labels(
        _torch(labels),
        torch.from_numpy(prob),
        torch.from_numpy(moving),
        scale=scale,
        ignore_index=ignore,
        min_vote_share=min_vote_share,
    )
    np.testing.assert_array_equal(_as_int64(torch_out), _as_int64(out))
    none_moving = segfix.vote_labels(labels, prob, np.zeros_like(moving), scale=scale, ignore_index=ignore)
    np.testing.assert_array_equal(none_moving, labels)


BAD_VALUES = [0, -1, 1.5, float("nan"), float("inf"), -float("inf"), "2", None, True, 2**70, np.float64(np.nan)]


@given(
    st.sampled_from(["scale", "iterations"]),
    st.sampled_from(BAD_VALUES),
    st.sampled_from(["shift", "refine", "vote"]),
)
def test_bad_arguments_raise_errors_that_name_them(name, value, function):
    labels = np.array([[0, 1], [1, 0]], np.uint8)
    offsets = np.zeros((2, 2, 2), np.int8)
    if name == "scale" and value == 2**70:  # a valid, huge scale: clamps to the border (every pixel to a corner)
        np.testing.assert_array_equal(segfix.shift_labels(labels, offsets, scale=value), labels)
        np.testing.assert_array_equal(
            segfix.shift_labels(labels, np.ones_like(offsets), scale=value), np.zeros_like(labels)
        )
        return
    with pytest.raises((ValueError, TypeError)) as info:
        if function == "shift":
            segfix.shift_labels(labels, offsets, **{name: value})
        elif function == "refine":
            segfix.refine_semantic(labels, offsets, **{name: value})
        else:
            prob, moving = np.full((8, 2, 2), 0.125, np.float32), np.ones((2, 2), bool)
            segfix.vote_labels(labels, prob, moving, **{"scale": 1, name: value})
    assert str(info.value).startswith(f"{name}:")


@given(
    st.sampled_from(
        [
            ("labels", lambda: [[0, 1]]),
            ("labels", lambda: np.zeros((2, 2), np.float32)),
            ("labels", lambda: np.zeros((1, 1, 2, 2), np.uint8)),
            ("offsets", lambda: np.zeros((2, 2, 3), np.int8)),
            ("offsets", lambda: np.zeros((2, 2, 2), np.float64)),
            ("offsets", lambda: torch.zeros((2, 2, 2), dtype=torch.int8)),
        ]
    )
)
def test_wrong_arrays_name_the_argument(case):
    name, make = case
    good = {"labels": np.zeros((2, 2), np.uint8), "offsets": np.zeros((2, 2, 2), np.int8)}
    good[name] = make()
    with pytest.raises((ValueError, TypeError)) as info:
        segfix.shift_labels(good["labels"], good["offsets"])
    message = str(info.value)
    assert message.startswith(name) or message.startswith("labels and offsets"), message


@given(st.integers(0, 2**31), st.sampled_from(["uint8", "int8", "int16", "int64"]), st.sampled_from([4, 8, 16]))
def test_flip_direction_is_an_involution_or_a_clear_error(seed, dtype, d):
    rng = np.random.default_rng(seed)
    lo = -1 if dtype != "uint8" else 0
    direction = rng.integers(lo, d, (3, 4)).astype(dtype)
    twice = segfix.flip_direction(segfix.flip_direction(direction, d), d)
    np.testing.assert_array_equal(twice, direction)
    assert twice.dtype == direction.dtype
    bad = direction.astype(np.int64)
    bad[0, 0] = d
    with pytest.raises(ValueError, match="direction"):
        segfix.flip_direction(bad, d)


@given(st.integers(0, 2**31), st.sampled_from([None, 0, 2, 255]), st.integers(1, 4))
def test_metrics_count_exactly_the_scored_pixels(seed, ignore, num_classes):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, num_classes + 1, (2, 5, 6))
    if ignore is not None:
        gt[rng.random(gt.shape) < 0.3] = ignore
    pred = rng.integers(0, num_classes + 1, gt.shape)
    m = SegmentationMetrics(num_classes, ignore_index=ignore)
    scored = (gt >= 0) & (gt < num_classes)
    if ignore is not None:
        scored &= gt != ignore
    # A label that is neither a class nor the ignore label (in the target, or in the prediction where it is
    # scored) means a wrong num_classes or label space: refused, never silently dropped or counted.
    unknown = ((gt >= num_classes) & (gt != ignore)).any() or ((pred >= num_classes) & (pred != ignore))[scored].any()
    if unknown:
        with pytest.raises(ValueError, match=rf"expected class ids 0\.\.{num_classes - 1} or the ignore label"):
            m.update(pred, gt)
        return
    m.update(pred, gt)
    r = m.compute()
    assert r.confusion.sum() == scored.sum()
    finite = r.iou[np.isfinite(r.iou)]
    assert ((finite >= 0) & (finite <= 1)).all()
    if ignore is not None and ignore < num_classes:
        assert np.isnan(r.iou[ignore])


@given(st.integers(0, 2**31), st.integers(1, 7), st.integers(1, 7), st.sampled_from([4, 8, 16]))
def test_boundary_targets_offsets_are_unit_steps_inside_the_band(seed, h, w, d):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, (h, w)).astype(np.uint8)
    targets = segfix.boundary_targets(label, num_directions=d, min_pixels=0)
    offsets = targets.offsets()
    step = 1 if d <= 8 else 2  # 16 directions add (1, 2)-type moves
    assert offsets.shape == (2, h, w) and np.abs(offsets).max(initial=0) <= step
    assert not (offsets[:, ~targets.boundary] != 0).any()


# ---------------------------------------------------------------- the command line

FLAG_VALUES = {
    "--scale": ["0", "-3", "x", "1e400", "nan"],
    "--iterations": ["0", "-1", "1.5"],
    "--batch-size": ["0", "-1", "inf"],
    "--workers": ["0", "-2"],
    "--ignore-index": ["x", "1.5"],
    "--tolerances": ["inf", "0", "-1", "nan"],
    "--widths": ["inf", "0", "nan"],
    "--num-classes": ["0", "-1", "x"],
}


@pytest.fixture(scope="module")
def cli_folders(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("cli_fuzz")
    for sub in ("preds", "gt", "offs"):
        (root / sub).mkdir()
    labels = np.zeros((8, 8), np.uint8)
    labels[:, 4:] = 1
    Image.fromarray(labels).save(root / "preds" / "a.png")
    Image.fromarray(labels).save(root / "gt" / "a.png")
    formats.write_offsets(root / "offs" / "a.npz", segfix.boundary_targets(labels, min_pixels=0).offsets())
    return root


@settings(max_examples=25)
@given(
    st.sampled_from(["refine", "eval", "stats", "offsets"]),
    st.sampled_from(sorted(FLAG_VALUES)),
    st.data(),
    st.booleans(),
)
def test_cli_bad_input_is_one_line_and_a_non_zero_exit(cli_folders, command, flag, data, missing_input):
    import contextlib
    import io

    root = cli_folders
    first = str(root / ("nope" if missing_input else ("gt" if command == "stats" else "preds")))
    argv = {
        "refine": ["refine", first, "--offsets", str(root / "offs"), "--output", str(root / "out_fuzz")],
        "eval": ["eval", first, str(root / "gt"), "--num-classes", "2"],
        "stats": ["stats", first, "--num-classes", "2"],
        "offsets": ["offsets", first, "--model", "camvid-lite0-v5", "--output", str(root / "off_fuzz")],
    }[command]
    applies = {
        "refine": {"--scale", "--iterations", "--batch-size", "--workers", "--ignore-index"},
        "eval": {"--tolerances", "--num-classes"},
        "stats": {"--widths", "--num-classes"},
        "offsets": {"--batch-size", "--workers"},
    }[command]
    if flag in applies:
        argv += [flag, data.draw(st.sampled_from(FLAG_VALUES[flag]))]
    elif not missing_input:
        return  # a valid command line: not this test's business
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_info:  # argparse refuses a value
            code = exit_info.code
    lines = [line for line in err.getvalue().splitlines() if line.strip() and "segfix" in line]
    assert code != 0, argv
    assert "Traceback" not in err.getvalue(), argv
    assert lines, argv
