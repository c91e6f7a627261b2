"""The refinement field: one decision step, one apply function, the same result by every route."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import segfix
from segfix.field import (
    RefinementField,
    apply_field,
    apply_field_to_instances,
    decide,
    field_from_maps,
    field_from_offsets,
)
from segfix.settings import DecisionSettings

TINY = dict(backbone="test_resnet", out_indices=(1, 2, 3), decoder_channels=8, head_channels=8)


def dense_outputs(seed: int = 0, n: int = 1, h: int = 12, w: int = 14):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, h, w, generator=g), torch.randn(n, 8, h, w, generator=g)


def test_decide_matches_the_thresholds_computed_by_hand():
    prob, logits = dense_outputs()
    softmax = logits.double().softmax(1)
    field = decide(prob, logits, DecisionSettings(boundary_threshold=0.4, direction_threshold=0.3))
    expected = (prob > 0.4) & (softmax.amax(1) > 0.3)
    assert torch.equal(field.moving, expected)
    vectors = torch.as_tensor(segfix.direction_vectors(8))
    by_hand = torch.where(expected[:, None], vectors[logits.argmax(1)].permute(0, 3, 1, 2), 0)
    assert torch.equal(field.offsets.long(), by_hand.long())
    assert (field.rule, field.scale, field.direction_prob) == ("argmax", 2, None)


def test_the_vote_field_keeps_every_boundary_pixel_and_its_probabilities():
    prob, logits = dense_outputs(1)
    decision = DecisionSettings(direction_vote=True, direction_threshold=0.3, semantic_scale=1)
    field = decide(prob, logits, decision)
    assert torch.equal(field.moving, prob > 0.5)  # the share is the vote's, not a per-pixel filter
    torch.testing.assert_close(field.direction_prob, logits.softmax(1))
    assert (field.rule, field.min_share, field.scale) == ("vote", 0.3, 1)
    # Instance fields never vote: masks are shifted.
    instance = decide(prob, logits, decision, instance=True)
    assert (instance.rule, instance.scale, instance.direction_prob) == ("argmax", 1, None)


def test_apply_field_is_refine_semantic_for_argmax_and_vote_labels_for_the_vote():
    prob, logits = dense_outputs(2)
    labels = np.random.default_rng(0).integers(0, 4, (12, 14)).astype(np.uint8)
    argmax = decide(prob, logits, DecisionSettings(semantic_scale=2, iterations=2))
    expected = segfix.refine_semantic(labels, argmax.offsets[0].numpy(), scale=2, iterations=2)
    np.testing.assert_array_equal(apply_field(argmax, labels), expected)
    vote = decide(prob, logits, DecisionSettings(direction_vote=True, semantic_scale=1))
    expected = segfix.vote_labels(labels, vote.direction_prob[0], vote.moving[0], scale=1)
    np.testing.assert_array_equal(apply_field(vote, labels), expected)
    tensor = apply_field(vote, torch.from_numpy(labels)[None])
    assert tensor.shape == (1, 12, 14) and tensor.dtype == torch.uint8
    np.testing.assert_array_equal(tensor[0].numpy(), expected)


def test_a_field_from_stored_offsets_and_probabilities_gives_the_vote_back():
    prob, logits = dense_outputs(3)
    vote = decide(prob, logits, DecisionSettings(direction_vote=True, semantic_scale=1, boundary_threshold=0.3))
    moving = vote.moving[0].numpy()
    stored = np.moveaxis(vote.direction_prob[0].numpy(), 0, -1)[moving]
    rebuilt = field_from_offsets(vote.offsets[0].numpy(), scale=1, rule="vote", vote_prob=stored)
    labels = np.random.default_rng(1).integers(0, 5, (12, 14))
    np.testing.assert_array_equal(apply_field(rebuilt, labels), apply_field(vote, labels))
    with pytest.raises(ValueError, match="vote_prob"):
        field_from_offsets(vote.offsets[0].numpy(), scale=1, rule="vote", vote_prob=stored[1:])


def test_offset_files_round_trip_the_field(tmp_path):
    from segfix.formats import read_field, write_field

    prob, logits = dense_outputs(4)
    for decision in (DecisionSettings(semantic_scale=3, iterations=2), DecisionSettings(direction_vote=True)):
        field = decide(prob, logits, decision)
        write_field(tmp_path / "f.npz", field)
        back = read_field(tmp_path / "f.npz", default_scale=2)
        assert (back.rule, back.scale, back.iterations) == (field.rule, field.scale, field.iterations)
        labels = np.random.default_rng(2).integers(0, 3, (12, 14))
        np.testing.assert_array_equal(apply_field(back, labels), apply_field(field, labels))


def test_fields_refuse_what_does_not_fit():
    prob, logits = dense_outputs(5, n=2)
    field = decide(prob, logits, DecisionSettings())
    with pytest.raises(ValueError, match="one map"):
        apply_field(field, np.zeros((12, 14), np.int64))
    with pytest.raises(ValueError, match="needs direction_prob"):
        dataclasses.replace(field, rule="vote")
    with pytest.raises(ValueError, match="rule"):
        RefinementField(field.moving, field.offsets, rule="nearest")
    with pytest.raises(ValueError, match="iterations"):
        field.with_steps(iterations=0)
    assert len(field[1]) == 1 and torch.equal(field[1].moving, field.moving[1:])


def test_instances_take_the_field_of_their_image():
    prob, logits = dense_outputs(6)
    field = decide(prob, logits, DecisionSettings(), instance=True)
    masks = np.zeros((2, 12, 14), bool)
    masks[0, :6], masks[1, 6:] = True, True
    expected = segfix.refine_instances(masks, field.offsets[0].numpy(), scale=1)
    np.testing.assert_array_equal(apply_field_to_instances(field, masks), expected)


def test_model_routes_share_the_field():
    model = segfix.SegFix(**TINY, boundary_threshold=0.2, direction_vote=True, semantic_scale=1)
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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_numpy_labels_meet_a_cuda_field_on_the_device():
    prob, logits = (x.cuda() for x in dense_outputs(7))
    labels = np.random.default_rng(5).integers(0, 6, (12, 14)).astype(np.uint8)
    for decision in (DecisionSettings(), DecisionSettings(direction_vote=True)):
        field = decide(prob, logits, decision)
        on_host = apply_field(field.numpy(), labels)
        result = apply_field(field, labels)
        assert isinstance(result, np.ndarray) and result.dtype == np.uint8
        np.testing.assert_array_equal(result, on_host)
