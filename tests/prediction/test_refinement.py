"""The one owner of refinement: `SegFix.refine`, the folder job and tuning give the same labels for the same maps and
settings, and each piece of the owner against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import segfix
from helpers import TINY, TinySet, read_label
from segfix.jobs import refine_folder
from segfix.metrics import SegmentationMetrics
from segfix.prediction.labels import LabelSpace
from segfix.prediction.refinement import pooled_thin_classes, refine_labels, refine_labels_by_steps
from segfix.training import select_settings

SETTINGS = dict(
    direction_vote=True, boundary_threshold=0.3, min_vote_share=0.0, semantic_scale=1, iterations=2,
    thin_guard=1, thin_guard_classes="auto", min_short_side=0, flip_tta=False,
)  # fmt: skip


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return segfix.SegFix(**TINY).eval().with_settings(**SETTINGS)


@pytest.fixture(scope="module")
def scenes():
    """Three scenes and coarse maps with a 1-px pole (class 3) in two of them: thin in the pool, so "auto" keeps
    it; a ragged sliver of class 1 in the third, thin there alone."""
    data = TinySet(3, seed=5)
    rng = np.random.default_rng(1)
    maps = []
    for i, sample in enumerate(data.samples):
        coarse = np.where(rng.random(sample.label.shape) < 0.05, (sample.label + 1) % 3, sample.label)
        coarse[coarse == 3] = 0
        if i < 2:
            coarse[:, 9] = 3
        maps.append(coarse.astype(np.uint8))
    return data, maps


@pytest.mark.parametrize("max_edge_distance", [0, 1])
def test_the_model_the_folder_job_and_tuning_refine_alike(model, scenes, tmp_path, max_edge_distance):
    data, maps = scenes
    model = model.with_settings(max_edge_distance=max_edge_distance)
    by_model = model.refine([s.image for s in data.samples], maps)  # a list: "auto" pooled over it
    assert sum(int((a != b).sum()) for a, b in zip(by_model, maps)) > 50  # pixels move: the equalities mean something
    pooled = pooled_thin_classes(maps, 1)
    assert 3 in pooled and 1 not in pooled

    # The folder job, its "auto" classes pooled over the folder's maps
    images, predictions = tmp_path / "images", tmp_path / "predictions"
    images.mkdir(), predictions.mkdir()
    for sample, coarse in zip(data.samples, maps):
        Image.fromarray(sample.image).save(images / f"{sample.name}.png")
        Image.fromarray(coarse).save(predictions / f"{sample.name}.png")
    report = refine_folder(predictions, tmp_path / "out", images_dir=images, model=model, batch_size=2)
    assert report.ok and len(report.done) == 3
    for sample, expected in zip(data.samples, by_model):
        np.testing.assert_array_equal(read_label(tmp_path / "out" / f"{sample.name}.png"), expected)

    # Tuning, with these very settings as its one candidate and "auto" pooled over the network's maps: its
    # gain is the gain of the model's maps, to the last bit of a float
    grid = dict(
        scales=(1,), iterations=(1, 2), thresholds=(0.3,), confidences=(0.0,), vote_shares=(0.0,), votes=(True,),
        flips=(False,), thin_guards=((1, "auto"),), edge_distances=(max_edge_distance,),
    )  # fmt: skip
    coarse = {"net": [m.astype(np.int64) for m in maps]}
    _, rows = select_settings(model, data, coarse=coarse, min_class_gain=None, **grid)
    (row,) = [r for r in rows if r["iterations"] == 2]
    assert row["thin_guard_classes"] == "auto" and row["max_edge_distance"] == max_edge_distance
    before, after = (SegmentationMetrics(4, tolerances=(1,), boundary_iou_dilation=None) for _ in range(2))
    for sample, m, refined in zip(data.samples, maps, by_model):
        before.update(m, sample.label)
        after.update(refined, sample.label)
    assert row["gains"]["net"] == (np.nanmean(after.compute().iou) - np.nanmean(before.compute().iou)) * 100


def test_refine_labels_is_what_the_model_calls(model, scenes):
    data, maps = scenes
    sample, coarse = data.samples[2], maps[2]
    field = model.predict_field(sample.image)
    np.testing.assert_array_equal(refine_labels(field, coarse), model.refine(sample.image, coarse))
    # a pool decides the "auto" classes: the pole is kept when the pool says it is thin
    np.testing.assert_array_equal(
        refine_labels(field, coarse, pooled=(3,)),
        model.with_settings(thin_guard_classes=(3,)).refine(sample.image, coarse),
    )


def test_steps_continue_the_last_step_as_one_call_per_count_would(model, scenes):
    data, maps = scenes
    field = model.predict_field(data.samples[0].image)
    stepped = refine_labels_by_steps(field, maps[0], [1, 2, 4])
    for count, got in zip([1, 2, 4], stepped):
        np.testing.assert_array_equal(got, refine_labels(field.with_steps(iterations=count), maps[0]))
    numpy_counts = refine_labels_by_steps(field, maps[0], list(np.array([1, 2, 4])))
    assert all((a == b).all() for a, b in zip(numpy_counts, stepped))
    for bad in ([2, 1], [0, 1], [], [1.5]):
        with pytest.raises(ValueError, match="ascending step counts"):
            refine_labels_by_steps(field, maps[0], bad)


def test_a_label_space_refines_stored_ids_as_their_class_ids(model, scenes):
    """Cityscapes labelIds in, labelIds out: the same pixels change as when the trainIds are refined, the stored
    ignore value (0 here) is never moved or created, and the folder pool reads the same thin classes."""
    data, maps = scenes
    space = LabelSpace("cityscapes-labelid")
    to_label = np.array([7, 8, 11, 12], np.uint8)  # trainIds 0..3 -> road, sidewalk, building, wall
    stored = [to_label[m] for m in maps]
    stored[0][:3, :3] = 0  # unlabeled: ignore
    field = model.predict_field(data.samples[0].image)
    refined = refine_labels(field, stored[0], label_space=space)
    classes = space.encode(stored[0])
    np.testing.assert_array_equal(space.encode(refined), refine_labels(field, classes))
    assert (refined[:3, :3] == 0).all() and (refined[3:] != 0).all()
    assert pooled_thin_classes(stored, 1, label_space=space) == pooled_thin_classes(maps, 1)
