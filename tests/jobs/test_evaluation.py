"""Folder evaluation (segfix eval / stats) against the metrics computed on the arrays directly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segfix.jobs.evaluation import (
    boundary_statistics_folder,
    comparison_markdown,
    evaluate_folder,
    matching_pairs,
    statistics_markdown,
)
from segfix.metrics import BoundaryStatistics, SegmentationMetrics


def write_maps(tmp_path, seed=0):
    rng = np.random.default_rng(seed)
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    maps = []
    for i in range(3):
        gt = np.repeat(np.arange(4, dtype=np.uint8), 8)[None].repeat(20, 0)
        gt[:2] = 11  # CamVid's stored void
        pred = np.where(rng.random(gt.shape) < 0.1, rng.integers(0, 4, gt.shape), gt).astype(np.uint8)
        Image.fromarray(gt).save(tmp_path / "gt" / f"f{i}.png")
        Image.fromarray(pred).save(tmp_path / "pred" / f"f{i}_pred.png")
        maps.append((pred, gt))
    return maps


def test_evaluate_folder_equals_the_metrics_of_the_arrays(tmp_path):
    maps = write_maps(tmp_path)
    reference = SegmentationMetrics(4, ignore_index=255, tolerances=(1, 2))
    for pred, gt in maps:
        reference.update(pred, np.where(gt == 11, 255, gt))
    expected = reference.compute()
    result = evaluate_folder(tmp_path / "pred", tmp_path / "gt", num_classes=4, stored_ignore=11, tolerances=(1, 2))
    assert result.miou == pytest.approx(expected.miou)
    np.testing.assert_allclose(result.mean_boundary_f[1], expected.mean_boundary_f[1])
    table = comparison_markdown(result, result, [tmp_path / "pred", tmp_path / "pred"])
    assert "+0.00" in table and "**mean**" in table


def test_missing_predictions_are_named(tmp_path):
    write_maps(tmp_path)
    (tmp_path / "pred" / "f1_pred.png").unlink()
    with pytest.raises(ValueError, match="1 ground-truth maps have no prediction"):
        matching_pairs(tmp_path / "pred", tmp_path / "gt")


def test_boundary_statistics_folder_equals_the_arrays(tmp_path):
    maps = write_maps(tmp_path)
    reference = BoundaryStatistics(4, widths=(1, 2))
    for _, gt in maps:
        reference.update(np.where(gt == 11, 255, gt))
    stats = boundary_statistics_folder(tmp_path / "gt", num_classes=4, stored_ignore=11, widths=(1, 2))
    np.testing.assert_allclose(stats.compute(), reference.compute())
    assert statistics_markdown(stats, ["a", "b", "c", "d"], (1, 2)).count("\n") == 6
