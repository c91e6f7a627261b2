"""fold_batchnorm: the folded copy against the unfolded network (float64), against the folding formula
computed by hand, and refused where a convolution's output is also read elsewhere."""

import numpy as np
import pytest
import torch
from torch import nn

import segfix
from helpers import TINY
from segfix.network.folding import FoldingError, fold_batchnorm
from segfix.network.segfix_net import SegFixNet
from segfix.prediction.inference import InferenceNetwork


def with_running_statistics(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random, non-trivial running statistics and affine weights in every batch norm."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(c, generator=g))
            m.bias.data.copy_(torch.randn(c, generator=g))
    return module.eval()


def test_folding_one_conv_and_batch_norm_matches_the_formula():
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False).double()
    bn = with_running_statistics(nn.BatchNorm2d(4).double())
    folded, count = fold_batchnorm(nn.Sequential(conv, bn), torch.randn(1, 3, 8, 8, dtype=torch.float64))
    assert count == 1 and isinstance(folded[1], nn.Identity)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(folded[0].weight, conv.weight * scale.view(4, 1, 1, 1))
    torch.testing.assert_close(folded[0].bias, bn.bias - bn.running_mean * scale)


def test_a_folded_segfix_network_matches_the_original_in_float64():
    torch.manual_seed(0)
    net = with_running_statistics(SegFixNet(**TINY, head_kernel_size=3)).double()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded, count = fold_batchnorm(net, torch.randn(1, 3, 32, 32, dtype=torch.float64))
    batch_norms = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert count == batch_norms and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 40, 56, dtype=torch.float64)
    with torch.no_grad():
        for expected, actual in zip(net(x), folded(x)):
            torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the original is untouched


def test_a_conv_output_read_twice_is_refused():
    class ReadTwice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    with pytest.raises(FoldingError, match="differs from the original"):
        fold_batchnorm(with_running_statistics(ReadTwice()), torch.randn(1, 2, 4, 4))


def test_a_model_refines_with_the_weights_it_holds_now():
    """The folded copy is rebuilt when the weights change: no stale network after load_state_dict."""
    torch.manual_seed(0)
    first = segfix.SegFix(**TINY).with_settings(precision="fp32").eval()
    second = segfix.SegFix(**TINY).with_settings(precision="fp32")
    with_running_statistics(second.net, seed=3)
    second.eval()
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    first.network_outputs(image).full()  # builds the folded copy of the first weights
    first.load_state_dict(second.state_dict())
    for a, b in zip(first.network_outputs(image).full(), second.network_outputs(image).full()):
        torch.testing.assert_close(a, b)
    # and the model's dense outputs are the unfolded network's
    batch = first.normalize(segfix.prediction.inputs.to_batch(image, first.device).groups[0])
    with torch.no_grad():
        logits = first.net(batch)[1]
    full = torch.nn.functional.interpolate(logits, size=(48, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(first.network_outputs(image).full()[1], full, rtol=1e-4, atol=1e-4)


def test_the_inference_network_follows_the_weights_and_the_mode():
    net = with_running_statistics(SegFixNet(**TINY))
    cache = InferenceNetwork()
    folded = cache.get(net)
    assert folded is not net and cache.get(net) is folded  # built once while nothing changes
    with torch.no_grad():
        net.boundary_head[2].weight.mul_(2)  # what an optimiser step does: in place
    refolded = cache.get(net)
    assert refolded is not folded
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(refolded(x)[0], net(x)[0], rtol=1e-4, atol=1e-4)
    assert cache.get(net.train()) is net  # batch statistics: nothing to fold
