"""The refinement field: one decision step, one apply function, the same result by every route."""

from __future__ import annotations

import numpy as np
import torch

import segfix
from helpers import TINY
from segfix.hub.settings import DecisionSettings
from segfix.ops.field import apply_field
from segfix.prediction.decision import decide, field_from_maps
from segfix.prediction.outputs import NetworkOutputs


def dense_outputs(seed: int = 0, n: int = 1, h: int = 12, w: int = 14):
    """(boundary probability, direction logits) at image resolution, and the same as NetworkOutputs."""
    g = torch.Generator().manual_seed(seed)
    prob, logits = torch.rand(n, h, w, generator=g), torch.randn(n, 8, h, w, generator=g)
    return prob, logits, NetworkOutputs(prob, logits, (h, w))


def test_decide_matches_the_thresholds_computed_by_hand():
    prob, logits, outputs = dense_outputs()
    softmax = logits.double().softmax(1)
    field = decide(outputs, DecisionSettings(boundary_threshold=0.4, min_direction_confidence=0.3))
    expected = (prob > 0.4) & (softmax.amax(1) > 0.3)
    assert torch.equal(field.moving, expected)
    vectors = torch.as_tensor(segfix.direction_vectors(8))
    by_hand = torch.where(expected[:, None], vectors[logits.argmax(1)].permute(0, 3, 1, 2), 0)
    assert torch.equal(field.offsets.long(), by_hand.long())
    assert (field.direction_vote, field.scale, field.direction_prob) == (False, 2, None)


def test_the_vote_field_keeps_every_boundary_pixel_and_its_probabilities():
    prob, logits, outputs = dense_outputs(1)
    decision = DecisionSettings(direction_vote=True, min_vote_share=0.3, semantic_scale=1)
    field = decide(outputs, decision)
    assert torch.equal(field.moving, prob > 0.5)  # the share is the vote's, not a per-pixel filter
    torch.testing.assert_close(field.direction_prob, logits.softmax(1).permute(0, 2, 3, 1)[prob > 0.5])
    assert (field.direction_vote, field.min_vote_share, field.scale) == (True, 0.3, 1)
    # Instance fields never vote: masks are shifted.
    instance = decide(outputs, decision, instance=True)
    assert (instance.direction_vote, instance.scale, instance.direction_prob) == (False, 1, None)


def test_deciding_on_the_network_grid_gives_the_field_of_the_resampled_maps():
    g = torch.Generator().manual_seed(9)
    low = NetworkOutputs(torch.rand(2, 7, 9, generator=g), 3 * torch.randn(2, 8, 7, 9, generator=g), (14, 17))
    prob, logits = low.full()
    assert prob.shape == (2, 14, 17) and logits.shape == (2, 8, 14, 17)
    full = NetworkOutputs(prob, logits, (14, 17))
    for decision in (
        DecisionSettings(boundary_threshold=0.3, min_direction_confidence=0.4),
        DecisionSettings(direction_vote=True, semantic_scale=1, boundary_threshold=0.4),
    ):
        sparse, dense = decide(low, decision), decide(full, decision)
        assert torch.equal(sparse.moving, dense.moving) and torch.equal(sparse.offsets, dense.offsets)
        if decision.direction_vote:
            torch.testing.assert_close(sparse.direction_prob, dense.direction_prob)
            labels = np.random.default_rng(6).integers(0, 4, (2, 14, 17))
            np.testing.assert_array_equal(apply_field(sparse, labels), apply_field(dense, labels))


def test_model_routes_share_the_field():
    model = segfix.SegFix(**TINY).with_settings(boundary_threshold=0.2, direction_vote=True, semantic_scale=1)
    image = np.random.default_rng(3).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    labels = np.random.default_rng(4).integers(0, 4, (40, 48)).astype(np.uint8)
    prediction = model.predict(image, direction_prob=True)
    from_maps = field_from_maps(
        prediction.boundary, prediction.direction, prediction.direction_prob, model.settings.decision
    )
    refined = model.refine(image, labels)
    np.testing.assert_array_equal(refined, apply_field(from_maps, labels))
    np.testing.assert_array_equal(refined, model.refine_prediction(prediction, labels))
    np.testing.assert_array_equal(refined, apply_field(model.predict_field(image), labels))
