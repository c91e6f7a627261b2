"""The refinement field: one decision step, one apply function, the same result by every route."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import segfix
from helpers import TINY
from segfix.hub.settings import DecisionSettings
from segfix.ops.field import RefinementField, apply_field, apply_field_to_instances, field_from_offsets
from segfix.prediction.decision import decide
from segfix.prediction.outputs import NetworkOutputs


def dense_outputs(seed: int = 0, n: int = 1, h: int = 12, w: int = 14):
    """(boundary probability, direction logits) at image resolution, and the same as NetworkOutputs."""
    g = torch.Generator().manual_seed(seed)
    prob, logits = torch.rand(n, h, w, generator=g), torch.randn(n, 8, h, w, generator=g)
    return prob, logits, NetworkOutputs(prob, logits, (h, w))


def test_apply_field_is_refine_semantic_for_argmax_and_vote_labels_for_the_vote():
    prob, logits, outputs = dense_outputs(2)
    labels = np.random.default_rng(0).integers(0, 4, (12, 14)).astype(np.uint8)
    argmax = decide(outputs, DecisionSettings(semantic_scale=2, iterations=2))
    expected = segfix.refine_semantic(labels, argmax.offsets[0].numpy(), scale=2, iterations=2)
    np.testing.assert_array_equal(apply_field(argmax, labels), expected)
    vote = decide(outputs, DecisionSettings(direction_vote=True, semantic_scale=1))
    dense_prob = logits.softmax(1)[0]
    expected = segfix.vote_labels(labels, dense_prob, vote.moving[0], scale=1)
    np.testing.assert_array_equal(apply_field(vote, labels), expected)
    tensor = apply_field(vote, torch.from_numpy(labels)[None])
    assert tensor.shape == (1, 12, 14) and tensor.dtype == torch.uint8
    np.testing.assert_array_equal(tensor[0].numpy(), expected)


def test_a_field_from_stored_offsets_and_probabilities_gives_the_vote_back():
    prob, logits, outputs = dense_outputs(3)
    vote = decide(outputs, DecisionSettings(direction_vote=True, semantic_scale=1, boundary_threshold=0.3))
    moving = vote.moving[0].numpy()
    stored = np.moveaxis(logits.softmax(1)[0].numpy(), 0, -1)[moving]
    np.testing.assert_allclose(vote.direction_prob.numpy(), stored, rtol=1e-6)
    rebuilt = field_from_offsets(vote.offsets[0].numpy(), scale=1, direction_vote=True, vote_prob=stored)
    labels = np.random.default_rng(1).integers(0, 5, (12, 14))
    np.testing.assert_array_equal(apply_field(rebuilt, labels), apply_field(vote, labels))
    with pytest.raises(ValueError, match="vote_prob"):
        field_from_offsets(vote.offsets[0].numpy(), scale=1, direction_vote=True, vote_prob=stored[1:])


def test_offset_files_round_trip_the_field(tmp_path):
    from segfix.jobs.formats import read_field, write_field

    prob, logits, outputs = dense_outputs(4)
    for decision in (DecisionSettings(semantic_scale=3, iterations=2), DecisionSettings(direction_vote=True)):
        field = decide(outputs, decision)
        write_field(tmp_path / "f.npz", field)
        back = read_field(tmp_path / "f.npz", default_scale=2)
        assert (back.direction_vote, back.scale, back.iterations) == (
            field.direction_vote,
            field.scale,
            field.iterations,
        )
        labels = np.random.default_rng(2).integers(0, 3, (12, 14))
        np.testing.assert_array_equal(apply_field(back, labels), apply_field(field, labels))


def test_fields_refuse_what_does_not_fit():
    prob, logits, outputs = dense_outputs(5, n=2)
    field = decide(outputs, DecisionSettings())
    with pytest.raises(ValueError, match="one map"):
        apply_field(field, np.zeros((12, 14), np.int64))
    with pytest.raises(ValueError, match="needs direction_prob"):
        dataclasses.replace(field, direction_vote=True)
    with pytest.raises(TypeError, match="direction_vote: expected True or False"):
        RefinementField(field.moving, field.offsets, direction_vote="vote")
    with pytest.raises(ValueError, match="iterations"):
        field.with_steps(iterations=0)
    assert len(field[1]) == 1 and torch.equal(field[1].moving, field.moving[1:])


def test_instances_take_the_field_of_their_image():
    prob, logits, outputs = dense_outputs(6)
    field = decide(outputs, DecisionSettings(), instance=True)
    masks = np.zeros((2, 12, 14), bool)
    masks[0, :6], masks[1, 6:] = True, True
    expected = segfix.refine_instances(masks, field.offsets[0].numpy(), scale=1)
    np.testing.assert_array_equal(apply_field_to_instances(field, masks), expected)


@pytest.mark.parametrize("vote", [False, True])
def test_k_steps_are_one_step_taken_k_times(vote):
    prob, logits, outputs = dense_outputs(11)
    field = decide(outputs, DecisionSettings(direction_vote=vote, semantic_scale=2, boundary_threshold=0.3))
    labels = np.random.default_rng(7).integers(0, 5, (12, 14))
    stepped = labels
    for _ in range(3):
        stepped = apply_field(field.with_steps(iterations=1), stepped)
    np.testing.assert_array_equal(apply_field(field.with_steps(iterations=3), labels), stepped)


def test_a_batched_vote_field_splits_and_joins_by_image():
    from segfix.ops.field import concat_fields

    prob, logits, outputs = dense_outputs(10, n=3)
    field = decide(outputs, DecisionSettings(direction_vote=True, semantic_scale=1))
    parts = [field[i] for i in range(3)]
    for i, part in enumerate(parts):
        expected = logits.softmax(1)[i].permute(1, 2, 0)[prob[i] > 0.5]
        torch.testing.assert_close(part.direction_prob, expected)
    assert torch.equal(field[-1].direction_prob, parts[2].direction_prob)
    joined = concat_fields(parts)
    assert torch.equal(joined.direction_prob, field.direction_prob) and torch.equal(joined.moving, field.moving)
    with pytest.raises(ValueError, match="K="):
        dataclasses.replace(field, direction_prob=field.direction_prob[1:])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_numpy_labels_meet_a_cuda_field_on_the_device():
    prob, logits, _ = dense_outputs(7)
    outputs = NetworkOutputs(prob.cuda(), logits.cuda(), (12, 14))
    labels = np.random.default_rng(5).integers(0, 6, (12, 14)).astype(np.uint8)
    for decision in (DecisionSettings(), DecisionSettings(direction_vote=True)):
        field = decide(outputs, decision)
        on_host = apply_field(field.numpy(), labels)
        result = apply_field(field, labels)
        assert isinstance(result, np.ndarray) and result.dtype == np.uint8
        np.testing.assert_array_equal(result, on_host)


@pytest.mark.parametrize("vote", [False, True])
@pytest.mark.parametrize("guard", [0, 2])
def test_a_label_map_is_checked_once_at_the_door(monkeypatch, vote, guard):
    """SegFix.refine -> apply_field checks the map's values once (one negative-label scan of an int64 map), and
    the inner gather, vote and thin-part opening trust it."""
    import segfix.checks as checks

    scans = []
    real = checks.check_labels_nonnegative
    monkeypatch.setattr(checks, "check_labels_nonnegative", lambda *a, **k: scans.append(a[1]) or real(*a, **k))
    model = segfix.SegFix(**TINY).with_settings(
        boundary_threshold=0.0, direction_vote=vote, thin_guard=guard, thin_guard_classes="auto" if guard else None
    )
    labels = np.random.default_rng(0).integers(0, 4, (32, 48)).astype(np.int64)
    refined = model.refine(np.zeros((32, 48, 3), np.uint8), labels)
    assert scans == ["label_map"] and refined.dtype == np.int64
    scans.clear()
    with pytest.raises(ValueError, match="expected class ids >= 0 or the ignore index 255, found -3"):
        model.refine(np.zeros((32, 48, 3), np.uint8), np.full((32, 48), -3, np.int64))
