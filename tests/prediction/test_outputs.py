"""The network's outputs: bilinear sampling at chosen pixels, and the direction head run at chosen grid cells
(``head_at``, ``DirectionsOnDemand``), against interpolating and running every pixel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import TINY
from segfix import SegFix
from segfix.hub.settings import DecisionSettings
from segfix.network.segfix_net import BNAct
from segfix.prediction.decision import decide
from segfix.prediction.outputs import DirectionsOnDemand, NetworkOutputs, bilinear_at, head_at, head_at_supported


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("grid, size", [((6, 7), (12, 14)), ((5, 9), (17, 31)), ((12, 14), (7, 5)), ((1, 3), (4, 4))])
def test_bilinear_at_equals_interpolating_every_pixel(grid, size, align_corners):
    g = torch.Generator().manual_seed(8)
    maps = torch.randn(2, 8, *grid, generator=g)
    full = torch.nn.functional.interpolate(maps, size=size, mode="bilinear", align_corners=align_corners)
    index = torch.meshgrid(torch.arange(2), torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    index = tuple(i.reshape(-1) for i in index)
    torch.testing.assert_close(bilinear_at(maps, index, size, align_corners), full[index[0], :, index[1], index[2]])


@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize(("activation", "folded"), [("relu", False), ("leaky_relu", False), ("relu", True)])
def test_the_head_at_cells_equals_the_dense_head_there(kernel, activation, folded):
    """float64: every cell of two small maps (the border cells read the zero padding) and a random subset."""
    head = random_head(kernel, activation, folded).double()
    features = torch.randn(2, 6, 7, 9, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    dense = head(features)
    n, y, x = every_cell(2, 7, 9)
    torch.testing.assert_close(head_at(head, features, (n, y, x)), dense[n, :, y, x], rtol=1e-12, atol=1e-12)
    pick = torch.randperm(len(n), generator=torch.Generator().manual_seed(1))[:20]
    torch.testing.assert_close(
        head_at(head, features, (n[pick], y[pick], x[pick])), dense[n[pick], :, y[pick], x[pick]]
    )
    # features that are not channels-last give the same values
    torch.testing.assert_close(head_at(head, features.contiguous(), (n, y, x)), dense[n, :, y, x])


def test_the_head_at_cells_under_bf16_autocast_matches_the_dense_head_to_bf16_precision():
    head = random_head(3, folded=True)
    features = torch.randn(1, 6, 12, 10).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    cells = every_cell(1, 12, 10)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        dense = head(features)[cells[0], :, cells[1], cells[2]].float()
        sparse = head_at(head, features, cells).float()
    torch.testing.assert_close(sparse, dense, rtol=2**-7, atol=2**-6)


def test_heads_it_cannot_evaluate_are_refused():
    assert head_at_supported(random_head(3))
    refused = [
        nn.Sequential(nn.Conv2d(6, 5, 3, padding=1, stride=2), nn.Conv2d(5, 4, 1)),  # strided
        nn.Sequential(nn.Conv2d(6, 5, 3, padding=2, dilation=2)),  # dilated
        nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, groups=2)),  # grouped
        nn.Sequential(nn.Conv2d(6, 5, 3, padding=0)),  # not "same"
        nn.Sequential(nn.Conv2d(6, 5, 2, padding=1)),  # even kernel
        nn.Sequential(nn.Conv2d(6, 5, 3, padding=1, padding_mode="reflect")),
        nn.Sequential(nn.Conv2d(6, 5, 3, padding=1), nn.Conv2d(5, 4, 3, padding=1)),  # a second window
        nn.Sequential(nn.Conv2d(6, 5, 3, padding=1), nn.Dropout2d()),
        random_head(3).train(),  # batch statistics
        nn.Conv2d(6, 5, 3, padding=1),  # not a sequence
    ]
    for head in refused:
        assert not head_at_supported(head), head
    with pytest.raises(ValueError, match="head_at: expected a k x k 'same' convolution"):
        head_at(refused[0], torch.zeros(1, 6, 4, 4), every_cell(1, 4, 4))


@pytest.mark.parametrize("align_corners", [False, True])
def test_outputs_that_run_the_direction_head_on_demand_equal_the_dense_outputs(align_corners):
    torch.manual_seed(0)
    model = SegFix(**TINY).eval()
    with torch.inference_mode():
        lazy, dense = on_demand_and_dense(model, torch.randn(2, 3, 40, 56))
        lazy = NetworkOutputs(lazy.boundary_prob, lazy.directions, lazy.size, align_corners)
        dense = NetworkOutputs(dense.boundary_prob, dense.directions, dense.size, align_corners)
        pixels = (torch.rand(2, *dense.size, generator=torch.Generator().manual_seed(2)) < 0.1).nonzero(as_tuple=True)
        torch.testing.assert_close(lazy.direction_logits_at(pixels), dense.direction_logits_at(pixels))
        # the field a decision makes from each is the same
        settings = DecisionSettings(boundary_threshold=0.3, direction_vote=True, iterations=2)
        a, b = decide(lazy, settings), decide(dense, settings)
        assert torch.equal(a.moving, b.moving) and torch.equal(a.offsets, b.offsets)
        torch.testing.assert_close(a.direction_prob, b.direction_prob)
        # the dense logits are there when asked for, computed once
        torch.testing.assert_close(lazy.direction_logits, dense.direction_logits)
        assert lazy.direction_logits is lazy.direction_logits
        torch.testing.assert_close(lazy.full()[1], dense.full()[1])
        torch.testing.assert_close(lazy.direction_logits_at(pixels), dense.direction_logits_at(pixels))


def random_head(kernel: int, activation: str = "relu", folded: bool = False) -> nn.Sequential:
    torch.manual_seed(kernel)
    hidden = nn.Conv2d(6, 5, kernel, padding=kernel // 2, bias=folded)
    middle: nn.Module = nn.ReLU(inplace=True) if folded else BNAct(5, activation)
    head = nn.Sequential(hidden, middle, nn.Conv2d(5, 4, 1, bias=folded)).eval()
    with torch.no_grad():
        for p in head.parameters():
            p.normal_()
        for m in head.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return head


def every_cell(n: int, h: int, w: int) -> tuple[torch.Tensor, ...]:
    return torch.ones(n, h, w, dtype=torch.bool).nonzero(as_tuple=True)


def on_demand_and_dense(model: SegFix, image: torch.Tensor):
    net = model.net.eval()
    features = net.features(image)
    prob = net.boundary_head(features).softmax(1)[:, 1].contiguous()
    size = (image.shape[-2] * 3 + 1, image.shape[-1] * 3 - 1)  # an upsampling factor that is not an integer
    lazy = NetworkOutputs(prob, DirectionsOnDemand(net.direction_head, features, "fp32"), size)
    dense = NetworkOutputs(prob, net.direction_head(features), size)
    return lazy, dense
