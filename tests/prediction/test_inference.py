"""Running the network: whole image or windows at the size the settings give, and the direction head left to run
only where a decision reads it, against the dense pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import TINY, constant_heads, random_image
from segfix import SegFix
from segfix.prediction.decision import decide
from segfix.prediction.inference import window_starts
from segfix.prediction.outputs import DirectionsOnDemand, NetworkOutputs


def test_refine_as_shipped_reads_the_head_on_demand_and_gives_the_dense_path_s_labels():
    """The facade's own pass leaves the direction head on demand (no flip averaging); flip averaging forces the
    dense head (its logits are averaged on the grid). Without flips both routes must give the same labels."""
    torch.manual_seed(0)
    model = SegFix(**TINY).eval().with_settings(boundary_threshold=0.2, direction_vote=True, iterations=3)
    image = np.random.default_rng(0).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 4, (45, 61)).astype(np.uint8)
    outputs = model.network_outputs(image)
    assert isinstance(outputs.directions, DirectionsOnDemand)
    dense = NetworkOutputs(outputs.boundary_prob, outputs.direction_logits.clone(), outputs.size)
    with torch.inference_mode():
        from_dense = decide(dense, model.settings.decision)
    from segfix.ops.field import apply_field

    np.testing.assert_array_equal(model.refine(image, labels), apply_field(from_dense, labels))
    assert isinstance(model.with_settings(flip_tta=True).network_outputs(image).directions, torch.Tensor)


def test_flip_averaging_and_compiled_networks_get_the_dense_head():
    """Flips average logits on the grid; a compiled network's features() would be the uncompiled module's."""
    from segfix.hub.settings import InferenceSettings
    from segfix.prediction.inference import dense_prediction

    torch.manual_seed(0)
    net = SegFix(**TINY).eval().net
    images = torch.randn(1, 3, 32, 40)
    with torch.inference_mode():
        kinds = {
            name: type(dense_prediction(net, images, InferenceSettings(**kwargs)).directions)
            for name, kwargs in {"plain": {}, "flip": {"flip_tta": True}, "compiled": {"torch_compile": True}}.items()
        }
    assert kinds == {"plain": DirectionsOnDemand, "flip": torch.Tensor, "compiled": torch.Tensor}


def test_window_starts():
    assert window_starts(100, 128, 85) == [0]
    assert window_starts(512, 512, 170) == [0]
    assert window_starts(1024, 512, 170) == [0, 170, 340, 510, 512]
    assert window_starts(300, 100, 100) == [0, 100, 200]


def test_sliding_equals_whole_when_one_window_covers(model):
    img = random_image(64, 64)
    model = model.with_settings(window_size=(64, 64), window_stride=(64, 64))
    whole = model.predict(img, inference="whole")
    sliding = model.predict(img, inference="sliding")
    np.testing.assert_array_equal(whole.boundary_prob, sliding.boundary_prob)
    np.testing.assert_array_equal(whole.direction, sliding.direction)


def test_sliding_overlaps_average_to_the_same_constant_field():
    model = constant_heads(SegFix(**TINY).eval(), direction=6)
    model = model.with_settings(window_size=(32, 32), window_stride=(20, 20))
    img = random_image(64, 96)
    whole = model.predict(img, inference="whole")
    sliding = model.predict(img, inference="sliding")
    np.testing.assert_allclose(sliding.boundary_prob, whole.boundary_prob, atol=1e-6)
    np.testing.assert_array_equal(sliding.direction, whole.direction)


def test_input_scale_returns_full_size(model):
    model = model.with_settings(input_scale=0.5)
    p = model.predict(random_image(64, 80))
    assert p.boundary_prob.shape == (64, 80)


@pytest.mark.parametrize("channel_order", ["RGB", "BGR"])
def test_normalising_after_the_resize_matches_normalising_before(channel_order):
    """The model resizes the [0, 1] image and normalises the smaller one; the network must see what it would
    see from the full-size normalised image resized (float64 reference of the same bilinear resize)."""
    torch.manual_seed(0)
    model = SegFix(**TINY).with_settings(
        channel_order=channel_order, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), input_scale=0.45
    )
    seen = []
    model.net.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].double()))
    model.eval().predict(random_image(70, 90))
    full = torch.from_numpy(random_image(70, 90)).permute(2, 0, 1)[None].double() / 255.0
    expected = torch.nn.functional.interpolate(model.normalize(full), size=seen[-1].shape[-2:], mode="bilinear")
    torch.testing.assert_close(seen[-1], expected, atol=1e-5, rtol=0)
