"""convert-official: a synthetic checkpoint in the original's exact layout, converted and checked numerically."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import segfix
from segfix.cli import main
from segfix.jobs.convert import convert_official_checkpoint

BACKBONE = "hrnet_w18_small"  # same parameter names as hrnet_w48, small enough for the default suite


def official_checkpoint(path, backbone=BACKBONE, directions=8, seed=0):
    """state_dict as openseg.pytorch saves it: 'module.' prefix, InPlaceABN heads without num_batches_tracked."""
    g = torch.Generator().manual_seed(seed)
    net = timm.create_model(
        backbone, pretrained=False, features_only=True, feature_location="", out_indices=(1, 2, 3, 4)
    )
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("running_var"):
            value = torch.rand(value.shape, generator=g) + 0.5
        elif value.is_floating_point():
            value = torch.randn(value.shape, generator=g) * 0.1
        state[f"module.backbone.{key}"] = value
    channels = sum(net.feature_info.channels())
    for head, out in (("mask_head", 2), ("dir_head", directions)):
        state[f"module.{head}.0.weight"] = torch.randn(256, channels, 1, 1, generator=g) * 0.05
        state[f"module.{head}.1.weight"] = torch.rand(256, generator=g) + 0.5
        state[f"module.{head}.1.bias"] = torch.randn(256, generator=g) * 0.1
        state[f"module.{head}.1.running_mean"] = torch.randn(256, generator=g) * 0.1
        state[f"module.{head}.1.running_var"] = torch.rand(256, generator=g) + 0.5
        state[f"module.{head}.2.weight"] = torch.randn(out, 256, 1, 1, generator=g) * 0.05
    torch.save(
        {"config_dict": {"network": {"backbone": "hrnet18", "model_name": "segfix_hrnet"}}, "state_dict": state}, path
    )
    return state


def reference_forward(state, x, backbone=BACKBONE):
    """The original network, written out: bilinear align_corners=True everywhere, LeakyReLU(0.01) heads."""
    net = timm.create_model(
        backbone, pretrained=False, features_only=True, feature_location="", out_indices=(1, 2, 3, 4)
    )

    class Up(nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, t):
            return F.interpolate(t, scale_factor=self.factor, mode="bilinear", align_corners=True)

    def patch(module):
        for name, child in module.named_children():
            if isinstance(child, nn.Upsample):
                setattr(module, name, Up(child.scale_factor))
            else:
                patch(child)

    patch(net)
    net.load_state_dict(
        {k.removeprefix("module.backbone."): v for k, v in state.items() if k.startswith("module.backbone.")},
        strict=False,
    )
    net.eval()
    feats = net(x)
    size = feats[0].shape[-2:]
    fused = torch.cat(
        [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=True) for f in feats[1:]], 1
    )

    def head(name):
        y = F.conv2d(fused, state[f"module.{name}.0.weight"])
        y = F.batch_norm(
            y,
            state[f"module.{name}.1.running_mean"],
            state[f"module.{name}.1.running_var"],
            state[f"module.{name}.1.weight"],
            state[f"module.{name}.1.bias"],
            False,
            0.0,
            1e-5,
        )
        return F.conv2d(F.leaky_relu(y, 0.01), state[f"module.{name}.2.weight"])

    return head("mask_head"), head("dir_head")


def test_converted_model_matches_the_original_network(tmp_path):
    state = official_checkpoint(tmp_path / "segfix.pth")
    model = convert_official_checkpoint(tmp_path / "segfix.pth", tmp_path / "converted", backbone=BACKBONE)
    rgb = torch.rand(1, 3, 64, 96)
    x = model.normalize(rgb)
    # BGR order with the ImageNet statistics applied in that order, as the original's loader does.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (rgb[:, [2, 1, 0]] - mean) / std)
    with torch.no_grad():
        ours = model(x)
        ref = reference_forward(state, x)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-4, atol=1e-4)
    reloaded = segfix.SegFix.from_pretrained(tmp_path / "converted")
    image = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(reloaded.predict_offsets(image), model.predict_offsets(image))
    assert reloaded.config["preprocessing"]["channel_order"] == "BGR" and reloaded.settings.inference.window_stride == (
        170,
        170,
    )


def test_cli_and_errors(tmp_path):
    official_checkpoint(tmp_path / "segfix.pth", directions=16)
    assert (
        main(
            [
                "convert-official",
                str(tmp_path / "segfix.pth"),
                "--output",
                str(tmp_path / "out"),
                "--backbone",
                BACKBONE,
            ]
        )
        == 0
    )
    assert segfix.SegFix.from_pretrained(tmp_path / "out").num_directions == 16
    with pytest.raises(segfix.ModelLoadError, match="shape mismatch|does not match"):
        convert_official_checkpoint(tmp_path / "segfix.pth", backbone="hrnet_w18_small_v2")
    torch.save({"state_dict": {"module.backbone.conv1.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(segfix.ModelLoadError, match="dir_head"):
        convert_official_checkpoint(tmp_path / "other.pth", backbone=BACKBONE)

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"state_dict": {}, "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(segfix.ModelLoadError, match="weights-only"):
        convert_official_checkpoint(tmp_path / "evil.pth", backbone=BACKBONE)


@pytest.mark.slow
def test_hrnet_w48_layout(tmp_path):
    official_checkpoint(tmp_path / "w48.pth", backbone="hrnet_w48")
    model = convert_official_checkpoint(tmp_path / "w48.pth")
    assert model.net.decoder.out_channels == 720  # 48 + 96 + 192 + 384, as the original's heads expect
