"""`segfix offsets`: one file per image holding the model's field, which `refine --offsets` turns back into the
model's own refinement; a second run writes nothing new."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

import segfix
from helpers import TINY, read_label, voronoi_labels
from segfix.jobs import offsets_folder, read_field, refine_folder


def test_offsets_files_hold_the_models_field_and_resume(tmp_path):
    torch.manual_seed(0)
    model = segfix.SegFix(**TINY).eval().with_settings(direction_vote=True, boundary_threshold=0.2, iterations=2)
    images, predictions = tmp_path / "images", tmp_path / "predictions"
    images.mkdir(), predictions.mkdir()
    for i in range(3):
        labels = voronoi_labels((36, 44), 5, 4, seed=i).astype(np.uint8)
        Image.fromarray(np.stack([labels * 60] * 3, -1).astype(np.uint8)).save(images / f"f{i}.png")
        Image.fromarray(labels).save(predictions / f"f{i}.png")
    report = offsets_folder(images, tmp_path / "offsets", model, batch_size=2)
    assert report.ok and sorted(report.done) == ["f0.png", "f1.png", "f2.png"]
    image = np.asarray(Image.open(images / "f1.png"))
    field = read_field(tmp_path / "offsets" / "f1.npz", default_scale=2)
    predicted = model.predict_field(image)
    assert (field.direction_vote, field.iterations, field.scale) == (True, 2, predicted.scale)
    np.testing.assert_array_equal(field.offsets, predicted.offsets.numpy())
    # the files refine as the model does
    refine_folder(predictions, tmp_path / "by_files", offsets_dir=tmp_path / "offsets")
    coarse = read_label(predictions / "f1.png")
    np.testing.assert_array_equal(read_label(tmp_path / "by_files" / "f1.png"), model.refine(image, coarse))
    again = offsets_folder(images, tmp_path / "offsets", model)
    assert again.done == [] and len(again.skipped) == 3
