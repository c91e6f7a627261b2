"""SegFixNet: outputs at the finest fused level's stride, the heads read one feature map, the widths are bounded."""

from __future__ import annotations

import pytest
import torch

from segfix.network import SegFixNet, create_backbone


@pytest.mark.parametrize("decoder", ["fpn", "concat"])
@pytest.mark.parametrize("num_directions", [4, 8, 16])
def test_outputs_sit_on_the_finest_fused_grid(decoder, num_directions):
    torch.manual_seed(0)
    net = SegFixNet("test_resnet", out_indices=(1, 2, 3), decoder=decoder, decoder_channels=8, head_channels=8,
                    num_directions=num_directions).eval()  # fmt: skip
    stride = net.output_stride
    assert stride == min(net.strides) and stride in (2, 4)
    images = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        boundary, direction = net(images)
        features = net.features(images)
    assert boundary.shape == (2, 2, 64 // stride, 96 // stride)
    assert direction.shape == (2, num_directions, 64 // stride, 96 // stride)
    # both heads read the same decoder features: running a head on them gives the network's output
    with torch.inference_mode():
        torch.testing.assert_close(net.direction_head(features), direction)
        torch.testing.assert_close(net.boundary_head(features), boundary)


def test_sizes_a_config_could_ask_for_are_refused_before_allocating():
    with pytest.raises(ValueError, match=r"decoder_channels: expected an integer in 1..1024, got 100000"):
        SegFixNet("test_resnet", decoder_channels=100_000)
    with pytest.raises(ValueError, match="decoder: expected 'fpn' or 'concat'"):
        SegFixNet("test_resnet", decoder="unet")
    with pytest.raises(ValueError, match="num_directions"):
        SegFixNet("test_resnet", num_directions=6)


def test_create_backbone_gives_the_asked_levels():
    backbone = create_backbone("test_resnet", (1, 2))
    assert len(backbone.feature_info.channels()) == 2
