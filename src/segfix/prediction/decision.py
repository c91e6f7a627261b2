"""The decision: a network's outputs -> which pixels move and how they take their labels. The one place the rule
is decided.

Two rules, each with its own minimum:

* ``'argmax'``: a boundary pixel (``boundary_prob > boundary_threshold``) follows its most likely direction,
  when that direction's probability exceeds ``min_direction_confidence`` (0 = always, as the original);
* ``'vote'`` (``direction_vote``): a boundary pixel takes the label most of its direction probability points at
  (:func:`segfix.vote_labels`), when that label's pooled share exceeds ``min_vote_share``.

Instance masks are always shifted by the argmax rule. :func:`decide` makes a
:class:`~segfix.ops.field.RefinementField` from :class:`~segfix.prediction.outputs.NetworkOutputs`;
:func:`decide_maps` gives the same decision as dense maps (what ``SegFix.predict`` returns as a
:class:`~segfix.prediction.outputs.Prediction`), and :func:`field_from_maps` turns those maps back into the same field.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..hub.settings import DecisionSettings
from ..ops.directions import direction_to_offset, direction_vectors
from ..ops.field import RefinementField
from .outputs import NetworkOutputs

__all__ = ["decide"]


def uses_vote(decision: DecisionSettings, *, instance: bool = False) -> bool:
    """Whether labels are voted on (semantic maps with ``direction_vote``) rather than shifted."""
    return decision.direction_vote and not instance


def field_settings(decision: DecisionSettings, *, instance: bool = False) -> dict[str, Any]:
    """The settings a :class:`~segfix.ops.field.RefinementField` carries, by their names there, from the decision's:
    ``semantic_scale`` or ``instance_scale`` become the field's ``scale``; instance masks are shifted (no vote,
    no thin-part guard, no limit on the distance from edges)."""
    vote = uses_vote(decision, instance=instance)
    return {
        "scale": decision.instance_scale if instance else decision.semantic_scale,
        "iterations": decision.iterations,
        "direction_vote": vote,
        "min_vote_share": decision.min_vote_share if vote else 0.0,
        "thin_guard": 0 if instance else decision.thin_guard,
        "thin_guard_classes": decision.thin_guard_classes,
        "max_edge_distance": 0 if instance else decision.max_edge_distance,
    }


def _confident(prob: torch.Tensor, decision: DecisionSettings, instance: bool, dim: int) -> torch.Tensor | None:
    """bool: where the argmax direction is confident enough to follow; None where every candidate moves."""
    if uses_vote(decision, instance=instance) or decision.min_direction_confidence <= 0:
        return None
    return prob.amax(dim) > decision.min_direction_confidence


def _needs_prob(decision: DecisionSettings, instance: bool) -> bool:
    return uses_vote(decision, instance=instance) or decision.min_direction_confidence > 0


def _softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """The softmax of each row of ``(K, D)`` logits. torch's softmax over a last dimension of 8 took 9.4 ms for
    130 K rows on a 2-core CPU, these three passes 1.7 ms; the values differ from it by at most one float32 step
    (and gave the same labels on all CamVid val images and a 1024x2048 scene)."""
    weights = (logits - logits.amax(1, keepdim=True)).exp_()
    return weights.mul_(weights.sum(1, keepdim=True).reciprocal_())


def decide(outputs: NetworkOutputs, decision: DecisionSettings, *, instance: bool = False) -> RefinementField:
    """A network's outputs -> the field, by ``decision``.

    The boundary probability is brought to image resolution; the direction logits only at the pixels above
    ``boundary_threshold`` (:meth:`~segfix.prediction.outputs.NetworkOutputs.direction_logits_at`), which gives the
    same field as resampling every pixel first, at a fraction of the cost and memory.

    Args:
        outputs: the network's outputs (:func:`segfix.prediction.inference.dense_prediction`); dense maps at image
            resolution fit too: ``NetworkOutputs(boundary_prob, direction_logits, boundary_prob.shape[-2:])``.
        decision: thresholds, rule, scale and iterations.
        instance: a field for instance masks: ``instance_scale`` and the argmax rule (masks are shifted, not
            voted on).

    Returns:
        A :class:`~segfix.ops.field.RefinementField` on the outputs' device.
    """
    vote = uses_vote(decision, instance=instance)
    candidates = outputs.boundary_prob_full() > decision.boundary_threshold
    n, y, x = candidates.nonzero(as_tuple=True)
    logits = outputs.direction_logits_at((n, y, x))
    direction = logits.argmax(1)
    prob = _softmax_rows(logits) if _needs_prob(decision, instance) else None
    moving = candidates
    confident = None if prob is None else _confident(prob, decision, instance, dim=1)
    if confident is not None:
        n, y, x, direction = n[confident], y[confident], x[confident], direction[confident]
        moving = torch.zeros_like(candidates)
        moving[n, y, x] = True
    vectors = torch.as_tensor(direction_vectors(int(logits.shape[1])), device=direction.device)[direction]
    offsets = torch.zeros((len(outputs), 2, *outputs.size), dtype=torch.int8, device=moving.device)
    offsets[n, 0, y, x] = vectors[:, 0]
    offsets[n, 1, y, x] = vectors[:, 1]
    return RefinementField(
        moving=moving,
        offsets=offsets,
        direction_prob=prob if vote else None,
        **field_settings(decision, instance=instance),
    )


def decide_maps(
    boundary_prob: torch.Tensor, direction_logits: torch.Tensor, decision: DecisionSettings, *, keep_prob: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The decision as dense maps: boundary probability ``(N, H, W)`` and direction logits ``(N, D, H, W)`` ->
    (direction int64 ``(N, H, W)``, moving bool ``(N, H, W)``, direction probabilities ``(N, D, H, W)`` when
    ``keep_prob``, else None). The logits are overwritten by their softmax where it is needed: at 4096x8192 the
    volume is 1 GiB."""
    direction = direction_logits.argmax(1)
    confidence_rule = not uses_vote(decision) and decision.min_direction_confidence > 0
    prob = torch.softmax(direction_logits, 1, out=direction_logits) if keep_prob or confidence_rule else None
    moving = boundary_prob > decision.boundary_threshold
    confident = None if prob is None else _confident(prob, decision, False, dim=1)
    if confident is not None:
        moving &= confident
    return direction, moving, prob if keep_prob else None


def field_from_maps(
    moving: Any, direction: Any, direction_prob: Any, decision: DecisionSettings, *, num_directions: int = 8
) -> RefinementField:
    """A semantic field from decided maps (what ``SegFix.predict`` returns): ``moving`` bool and ``direction``
    int ``(H, W)`` or ``(N, H, W)``; ``direction_prob`` ``(D, H, W)`` / ``(N, D, H, W)`` or None (needed by the
    vote), numpy or torch alike."""
    vote = uses_vote(decision)
    if vote and direction_prob is None:
        raise ValueError("refine_prediction: direction_vote needs predict(..., direction_prob=True)")
    if moving.ndim == 2:  # one image
        moving, direction = moving[None], direction[None]
        direction_prob = direction_prob[None] if direction_prob is not None else None
    if direction_prob is not None:
        num_directions = int(direction_prob.shape[1])
    moving_prob = None
    if vote:  # (N, D, H, W) -> (K, D) at the moving pixels, in row-major order
        if isinstance(direction_prob, torch.Tensor):
            moving_prob = direction_prob.permute(0, 2, 3, 1)[torch.as_tensor(moving, device=direction_prob.device)]
        else:
            moving_prob = np.moveaxis(np.asarray(direction_prob), 1, -1)[np.asarray(moving)]
    return RefinementField(
        moving=moving,
        offsets=direction_to_offset(direction, moving, num_directions=num_directions),
        direction_prob=moving_prob,
        **field_settings(decision),
    )
