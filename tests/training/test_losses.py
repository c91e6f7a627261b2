"""The SegFix loss, against manual computations: class weights, pixel weights, thin-part weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segfix.training.losses import segfix_loss


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_loss_matches_a_manual_computation():
    torch.manual_seed(0)
    b_logits, d_logits = torch.randn(2, 2, 4, 4), torch.randn(2, 8, 4, 4)
    b_target = torch.randint(0, 2, (2, 8, 8))
    b_target[0, 0] = -1
    d_target = torch.where(b_target == 1, torch.randint(0, 8, (2, 8, 8)), -1)
    total, parts = segfix_loss(b_logits, d_logits, b_target, d_target)
    bl = F.interpolate(b_logits, size=(8, 8), mode="bilinear")
    dl = F.interpolate(d_logits, size=(8, 8), mode="bilinear")
    valid = b_target >= 0
    n1 = (b_target[valid] == 1).sum().item()
    n = valid.sum().item()
    w = torch.tensor([1 - (n - n1) / n, 1 - n1 / n])
    logp = bl.log_softmax(1)
    picked = logp.permute(0, 2, 3, 1)[valid].gather(1, b_target[valid][:, None])[:, 0]
    weights = w[b_target[valid]]
    expected_b = -(weights * picked).sum() / weights.sum()
    on = d_target >= 0
    counts = torch.bincount(d_target[on], minlength=8).float()
    wd = 1 - counts / counts.sum()
    picked_d = dl.log_softmax(1).permute(0, 2, 3, 1)[on].gather(1, d_target[on][:, None])[:, 0]
    expected_d = -(wd[d_target[on]] * picked_d).sum() / wd[d_target[on]].sum()
    assert parts["boundary"] == pytest.approx(float(expected_b), rel=1e-5)
    assert parts["direction"] == pytest.approx(float(expected_d), rel=1e-5)
    assert float(total) == pytest.approx(float(expected_b + expected_d), rel=1e-5)


def test_segment_class_weights_balance_classes_and_keep_a_weighted_mean():
    import torch

    from segfix.training.losses import segment_class_weights

    label = torch.tensor([[[0, 0, 0, 0, 0, 0, 1, 1]]])  # class 1 holds a quarter of the supervised pixels
    supervised = torch.ones_like(label, dtype=torch.bool)
    supervised[0, 0, 0] = False
    w = segment_class_weights(label, supervised, 0.5)
    assert w[0, 0, 0] == 0  # unsupervised pixels get no weight
    share0, share1 = 5 / 7, 2 / 7
    expected = torch.tensor([share0**-0.5] * 5 + [share1**-0.5] * 2)
    torch.testing.assert_close(w[supervised], expected / expected.mean())
    torch.testing.assert_close(segment_class_weights(label, supervised, 0.0)[supervised], torch.ones(7))


def test_pixel_weighted_direction_loss_matches_a_manual_computation():
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    b_logits, d_logits = torch.randn(1, 2, 4, 4), torch.randn(1, 8, 4, 4)
    b_target = torch.randint(0, 2, (1, 4, 4))
    d_target = torch.randint(-1, 8, (1, 4, 4))
    pixel = torch.rand(1, 4, 4)
    _, parts = segfix_loss(b_logits, d_logits, b_target, d_target, direction_pixel_weight=pixel)
    valid = d_target >= 0
    counts = torch.bincount(d_target[valid], minlength=8).float()
    class_w = 1 - counts / counts.sum()
    ce = F.cross_entropy(d_logits, d_target.clamp_min(0), reduction="none")
    w = torch.where(valid, class_w[d_target.clamp_min(0)] * pixel, 0.0)
    assert abs(parts["direction"] - float((ce * w).sum() / w.sum())) < 1e-5
    _, ones = segfix_loss(b_logits, d_logits, b_target, d_target, direction_pixel_weight=torch.ones(1, 4, 4))
    _, plain = segfix_loss(b_logits, d_logits, b_target, d_target)
    assert abs(ones["direction"] - plain["direction"]) < 1e-5


def test_thin_part_weights_lift_a_pole_and_keep_the_mean():
    from segfix.training.losses import thin_part_weights

    segment = torch.zeros(1, 9, 9, dtype=torch.int64)
    segment[0, :, 4] = 1  # a one-pixel pole between two 4-pixel-wide fields
    supervised = torch.ones(1, 9, 9, dtype=torch.bool)
    supervised[0, 0, 0] = False
    weights = thin_part_weights(segment, supervised, 1, 4.0)
    scale = 80 / (71 + 9 * 4.0)  # 80 supervised pixels, 9 of them on the pole
    expected = torch.full((1, 9, 9), scale)
    expected[0, :, 4] = 4.0 * scale
    expected[0, 0, 0] = 0.0
    torch.testing.assert_close(weights, expected)
    assert abs(float(weights[supervised].mean()) - 1.0) < 1e-6
    torch.testing.assert_close(thin_part_weights(segment, supervised, 1, 1.0), supervised.float())


def test_the_thin_weight_enters_the_direction_loss_as_a_weighted_mean():
    """segfix_loss with the thin weights equals the weighted mean of the per-pixel cross-entropies, in float64."""
    from segfix.training.losses import thin_part_weights

    g = torch.Generator().manual_seed(0)
    segment = torch.zeros(2, 12, 12, dtype=torch.int64)
    segment[:, :, 6] = 1
    direction = torch.randint(0, 8, (2, 12, 12), generator=g)
    direction[:, :, :3] = -1
    boundary = (direction >= 0).long()
    logits = torch.randn(2, 8, 12, 12, generator=g)
    weights = thin_part_weights(segment, direction >= 0, 1, 5.0)
    _, parts = segfix_loss(torch.randn(2, 2, 12, 12, generator=g), logits, boundary, direction,
                           direction_pixel_weight=weights)  # fmt: skip
    valid = direction >= 0
    counts = torch.bincount(direction[valid], minlength=8).double()
    class_weight = 1.0 - counts / counts.sum()
    ce = torch.nn.functional.cross_entropy(logits.double(), direction.clamp_min(0), reduction="none")
    w = torch.where(valid, class_weight[direction.clamp_min(0)] * weights.double(), 0.0)
    assert abs(parts["direction"] - float((ce * w).sum() / w.sum())) < 1e-5
