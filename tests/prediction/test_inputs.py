"""SegFix model: input kinds, batching, refinement semantics, sliding windows, save/load and the Hub cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY16, random_image, voronoi_labels
from segfix import SegFix


def test_input_kinds_shapes_and_dtypes(model, device):
    model.to(device)
    img = random_image()
    p = model.predict(img)
    assert p.boundary_prob.shape == (48, 64) and p.boundary_prob.dtype == np.float32
    assert p.direction.dtype == np.int64 and p.boundary.dtype == bool
    assert p.direction.min() >= 0 and p.direction.max() < 8
    from_pil = model.predict_offsets(Image.fromarray(img))
    assert from_pil.shape == (2, 48, 64) and from_pil.dtype == np.int8
    stack = model.predict_offsets(np.stack([img, random_image(seed=1)]))
    assert stack.shape == (2, 2, 48, 64)
    as_list = model.predict_offsets([img, random_image(seed=1)])
    np.testing.assert_array_equal(as_list, stack)
    t = torch.from_numpy(img).permute(2, 0, 1).float().div(255).to(device)
    off_t = model.predict_offsets(t)
    assert isinstance(off_t, torch.Tensor) and off_t.device.type == device.type and off_t.shape == (2, 48, 64)
    np.testing.assert_array_equal(off_t.cpu().numpy(), from_pil)
    off_u8 = model.predict_offsets(torch.from_numpy(img).permute(2, 0, 1)[None].to(device))
    np.testing.assert_array_equal(off_u8[0].cpu().numpy(), from_pil)
    mixed = model.predict_offsets([img, random_image(32, 40)])
    assert isinstance(mixed, list) and mixed[0].shape == (2, 48, 64) and mixed[1].shape == (2, 32, 40)


def test_a_uint8_tensor_in_the_picture_layout_is_taken_as_the_numpy_image(model):
    """(H, W, 3) and (N, H, W, 3) uint8 tensors, as torchvision.io.decode_image(...).permute or PIL gives them,
    give the numpy image's outputs, as tensors."""
    img = random_image()
    labels = voronoi_labels((48, 64), 6, 4, seed=2)
    expected = model.refine(img, labels)
    got = model.refine(torch.from_numpy(img), torch.from_numpy(labels))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), expected)
    batch = model.predict_offsets(torch.from_numpy(np.stack([img, img])))
    np.testing.assert_array_equal(batch[1].numpy(), model.predict_offsets(img))


def test_input_errors(model):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) RGB, \(H, W, 4\) RGBA or \(H, W\) grey"):
        model.predict(np.zeros((10, 10, 2), np.uint8))  # (H, W) grey and (H, W, 4) RGBA are images too
    with pytest.raises(TypeError, match="uint8"):
        model.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(3, H, W\) or \(N, 3, H, W\)"):
        model.predict(torch.zeros(1, 4, 10, 10))
    with pytest.raises(ValueError, match=r"\(3, H, W\) or \(N, 3, H, W\).*needs .permute\(2, 0, 1\)"):
        model.predict(torch.zeros(10, 12, 3))  # a float (H, W, 3) tensor: which layout is meant is unclear
    with pytest.raises(ValueError, match="does not match the image size"):
        model.refine(random_image(), np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="inference"):
        model.predict(random_image(), inference="tiles")
    with pytest.raises(ValueError, match="channel_order"):
        SegFix(**TINY16).with_settings(channel_order="BRG")
