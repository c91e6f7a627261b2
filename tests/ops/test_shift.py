"""shift_labels: identity, closure, clamping, exact equality of every implementation, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import segfix
from helpers import reference_walk as loop_reference
from segfix.ops import kernels

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.int64, np.bool_]


def random_case(rng, shape=(13, 17), dtype=np.uint8, reach=3, share=0.3, offset_dtype=np.int8):
    labels = rng.integers(0, 2 if dtype == np.bool_ else 100, shape).astype(dtype)
    offsets = rng.integers(-reach, reach + 1, (2, *shape)).astype(offset_dtype)
    offsets *= (rng.random(shape) < share).astype(offset_dtype)
    return labels, offsets


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale,iterations", [(1, 1), (2, 1), (1, 3), (3, 2)])
def test_every_implementation_matches_the_loop(dtype, scale, iterations):
    rng = np.random.default_rng([DTYPES.index(dtype), scale, iterations])
    labels, offsets = random_case(rng, dtype=dtype)
    expected = loop_reference(labels, offsets, scale, iterations)
    public = segfix.shift_labels(labels, offsets, scale=scale, iterations=iterations)
    assert public.dtype == labels.dtype and public.shape == labels.shape
    np.testing.assert_array_equal(public, expected)
    shifted = segfix.shift_labels(labels, offsets, scale=scale, iterations=iterations, backend="numpy")
    np.testing.assert_array_equal(shifted, expected)
    if kernels.HAVE_NUMBA:
        shifted = segfix.shift_labels(labels, offsets, scale=scale, iterations=iterations, backend="numba")
        np.testing.assert_array_equal(shifted, expected)
    torch_out = segfix.shift_labels(
        torch.from_numpy(labels), torch.from_numpy(offsets), scale=scale, iterations=iterations
    )
    assert torch_out.dtype == torch.from_numpy(labels).dtype
    np.testing.assert_array_equal(torch_out.numpy(), expected)


@pytest.mark.parametrize("width", [1, 2, 3, 5, 7, 8, 9, 15, 16, 17])
def test_maps_of_any_width(width):
    # The compiled kernel tests offsets 8 pixels at a time: groups that span two or more rows (maps narrower
    # than 8) must still gather from the right row.
    rng = np.random.default_rng(width)
    labels, offsets = random_case(rng, shape=(11, width), reach=2, share=0.5)
    for scale in (1, 3):
        np.testing.assert_array_equal(
            segfix.shift_labels(labels, offsets, scale=scale), loop_reference(labels, offsets, scale, 1)
        )


@pytest.mark.parametrize("offset_dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8])
def test_offset_dtypes(offset_dtype):
    rng = np.random.default_rng(1)
    labels, offsets = random_case(rng, reach=1 if offset_dtype == np.uint8 else 3)
    offsets = np.abs(offsets).astype(offset_dtype)
    np.testing.assert_array_equal(segfix.shift_labels(labels, offsets), loop_reference(labels, offsets))


def test_zero_offsets_are_identity_and_input_untouched(device):
    labels = torch.randint(0, 19, (3, 31, 29), dtype=torch.int32).to(device)
    before = labels.clone()
    out = segfix.shift_labels(labels, torch.zeros(3, 2, 31, 29, dtype=torch.int8, device=device), scale=2)
    assert torch.equal(out, labels) and torch.equal(labels, before) and out.device == labels.device
    np_labels = labels.cpu().numpy()
    out_np = segfix.shift_labels(np_labels, np.zeros((2, 31, 29), np.int8), scale=2, iterations=4)
    np.testing.assert_array_equal(out_np, np_labels)
    assert out_np is not np_labels


def test_output_labels_are_a_subset_of_input_labels():
    rng = np.random.default_rng(5)
    for _ in range(20):
        labels, offsets = random_case(rng, shape=(20, 20), reach=6, share=0.8)
        out = segfix.shift_labels(labels, offsets, scale=2, iterations=2)
        assert set(np.unique(out)) <= set(np.unique(labels))


def test_clamping_at_the_border():
    labels = np.arange(12, dtype=np.int64).reshape(3, 4)
    offsets = np.zeros((2, 3, 4), np.int16)
    offsets[0, 0, 0], offsets[1, 0, 0] = -5, -5  # far above-left -> (0, 0)
    offsets[0, 2, 3], offsets[1, 2, 3] = 9, 9  # far below-right -> (2, 3)
    offsets[0, 1, 1], offsets[1, 1, 1] = 0, 100  # far right -> (1, 3)
    offsets[0, 2, 0] = -100  # far up -> (0, 0)
    out = segfix.shift_labels(labels, offsets)
    assert out[0, 0] == 0 and out[2, 3] == 11 and out[1, 1] == 7 and out[2, 0] == 0


def test_channel_order_is_dy_dx():
    labels = np.arange(25, dtype=np.uint8).reshape(5, 5)
    offsets = np.zeros((2, 5, 5), np.int8)
    offsets[0, 2, 2] = 1  # dy = +1: take from the row below
    offsets[1, 1, 1] = 2  # dx = +2: take from two columns right
    out = segfix.shift_labels(labels, offsets)
    assert out[2, 2] == labels[3, 2] and out[1, 1] == labels[1, 3]


def test_iterations_follow_the_field():
    labels = np.array([[0, 1, 2, 3, 4]], np.uint8)
    offsets = np.zeros((2, 1, 5), np.int8)
    offsets[1, 0, :3] = 1  # pixels 0..2 point right; pixel 3 is a sink
    out = segfix.shift_labels(labels, offsets, iterations=5)
    np.testing.assert_array_equal(out, [[3, 3, 3, 3, 4]])


def test_batch_and_shared_field(device):
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 5, (4, 11, 12)).astype(np.uint8)
    fields = rng.integers(-2, 3, (4, 2, 11, 12)).astype(np.int8)
    per_map = np.stack([loop_reference(labels[i], fields[i], 2) for i in range(4)])
    np.testing.assert_array_equal(segfix.shift_labels(labels, fields, scale=2), per_map)
    shared = np.stack([loop_reference(labels[i], fields[0], 2) for i in range(4)])
    np.testing.assert_array_equal(segfix.shift_labels(labels, fields[0], scale=2), shared)
    out = segfix.shift_labels(torch.from_numpy(labels).to(device), torch.from_numpy(fields).to(device), scale=2)
    assert out.device.type == device.type
    np.testing.assert_array_equal(out.cpu().numpy(), per_map)


def test_torch_dense_path_on_device_matches_numpy(device):
    rng = np.random.default_rng(2)
    labels, offsets = random_case(rng, shape=(64, 96), dtype=np.int64, reach=4, share=0.2)
    expected = segfix.shift_labels(labels, offsets, scale=2, iterations=3, backend="numpy")
    got = segfix.shift_labels(
        torch.from_numpy(labels).to(device),
        torch.from_numpy(offsets).to(device),
        scale=2,
        iterations=3,
        backend="torch",
    )
    np.testing.assert_array_equal(got.cpu().numpy(), expected)


def test_empty_batch():
    out = segfix.shift_labels(np.zeros((0, 4, 5), np.uint8), np.zeros((2, 4, 5), np.int8))
    assert out.shape == (0, 4, 5)
    out_t = segfix.shift_labels(torch.zeros(0, 4, 5, dtype=torch.uint8), torch.zeros(2, 4, 5, dtype=torch.int8))
    assert out_t.shape == (0, 4, 5)


def test_errors():
    labels = np.zeros((4, 5), np.uint8)
    offsets = np.zeros((2, 4, 5), np.int8)
    with pytest.raises(TypeError, match="integer or bool dtype"):
        segfix.shift_labels(labels.astype(np.float32), offsets)
    with pytest.raises(TypeError, match="offsets: expected an integer dtype"):
        segfix.shift_labels(labels, offsets.astype(np.float32))
    with pytest.raises(ValueError, match=r"expected shape \(H, W\) or \(N, H, W\)"):
        segfix.shift_labels(labels[None, None], offsets)
    with pytest.raises(ValueError, match=r"expected shape \(2, H, W\) = \(2, 4, 5\)"):
        segfix.shift_labels(labels, np.zeros((2, 4, 6), np.int8))
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        segfix.shift_labels(labels[None].repeat(3, 0), np.zeros((2, 2, 4, 5), np.int8))
    with pytest.raises(TypeError, match="must both be numpy or both torch"):
        segfix.shift_labels(labels, torch.zeros(2, 4, 5, dtype=torch.int8))
    with pytest.raises(ValueError, match="scale"):
        segfix.shift_labels(labels, offsets, scale=1.5)
    with pytest.raises(ValueError, match="scale"):
        segfix.shift_labels(labels, offsets, scale=0)
    with pytest.raises(ValueError, match="iterations"):
        segfix.shift_labels(labels, offsets, iterations=0)
    with pytest.raises(TypeError, match="numpy.ndarray or torch.Tensor"):
        segfix.shift_labels(labels.tolist(), offsets)


@pytest.mark.gpu
def test_cuda_matches_cpu_bit_for_bit():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(4)
    for dtype in DTYPES:
        labels, offsets = random_case(rng, shape=(257, 513), dtype=dtype, reach=5)
        cpu = segfix.shift_labels(labels, offsets, scale=2, iterations=2)
        gpu = segfix.shift_labels(
            torch.from_numpy(labels).cuda(), torch.from_numpy(offsets).cuda(), scale=2, iterations=2
        )
        np.testing.assert_array_equal(gpu.cpu().numpy(), cpu)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool, torch.uint16])
def test_cpu_tensors_match_the_reference_for_every_dtype(dtype):
    # CPU tensors take the compiled numpy kernel (reading their memory in place); the result must still be the
    # loop reference's, in the tensor's own dtype, and views that are not contiguous must work too.
    rng = np.random.default_rng(4)
    labels, offsets = random_case(rng, shape=(37, 53), dtype=np.int64, reach=3, share=0.3)
    labels = labels % 2 if dtype == torch.bool else labels
    expected = loop_reference(labels, offsets, 2)
    tensor = torch.from_numpy(labels).to(dtype)
    out = segfix.shift_labels(tensor, torch.from_numpy(offsets), scale=2)
    assert out.dtype == dtype and out.device.type == "cpu"
    np.testing.assert_array_equal(out.to(torch.int64).numpy(), expected)
    transposed = segfix.shift_labels(
        tensor.t().contiguous().t(),
        torch.from_numpy(offsets.copy()).transpose(1, 2).contiguous().transpose(1, 2),
        scale=2,
    )
    np.testing.assert_array_equal(transposed.to(torch.int64).numpy(), expected)
    assert torch.equal(tensor, torch.from_numpy(labels).to(dtype))  # the input is left as it was


def test_backends_are_checked():
    labels, offsets = np.zeros((4, 5), np.uint8), np.zeros((2, 4, 5), np.int8)
    with pytest.raises(ValueError, match="backend: expected one of 'auto', 'numba', 'numpy', 'torch', got 'cuda'"):
        segfix.shift_labels(labels, offsets, backend="cuda")
    with pytest.raises(TypeError, match="backend 'torch': expected torch tensors"):
        segfix.shift_labels(labels, offsets, backend="torch")
    labels = np.arange(20, dtype=np.uint8).reshape(4, 5)
    offsets[1, 1, 2], offsets[0, 3, 0] = 1, -2  # (1, 2) reads (1, 3); (3, 0) reads (1, 0)
    out = segfix.shift_labels(torch.from_numpy(labels), torch.from_numpy(offsets), backend="numpy")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8  # tensors in, a tensor out
    expected = labels.copy()
    expected[1, 2], expected[3, 0] = labels[1, 3], labels[1, 0]
    np.testing.assert_array_equal(out.numpy(), expected)
