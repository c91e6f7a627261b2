"""Promise: a score is right or refused, never plausible and wrong (docs/security.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import read_label
from segfix.cli import main
from segfix.jobs import formats
from segfix.metrics import SegmentationMetrics


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_metrics_never_count_the_ignore_label_even_when_it_is_a_class_id():
    m = SegmentationMetrics(2, ignore_index=0)
    m.update(np.array([[0, 1], [1, 1]]), np.array([[0, 0], [1, 1]]))
    r = m.compute()
    assert np.isnan(r.iou[0]) and r.iou[1] == 1.0
    assert r.confusion.sum() == 2  # the two ignore pixels are not counted
    assert np.isnan(r.boundary_f[1][0])


def test_metrics_predicting_the_ignore_class_is_wrong():
    m = SegmentationMetrics(3, ignore_index=0)
    m.update(np.array([[0, 2]]), np.array([[1, 2]]))  # the first pixel predicted as the ignore label
    r = m.compute()
    assert r.iou[1] == 0.0 and r.iou[2] == 1.0 and np.isnan(r.iou[0])


def test_eval_with_too_few_classes_is_refused_and_extra_predictions_are_named(tmp_path, capsys, caplog):
    labels = np.repeat(np.arange(7, dtype=np.uint8), 4)[None].repeat(6, 0)
    _write(tmp_path / "gt" / "a.png", labels)
    _write(tmp_path / "pred" / "a.png", labels)
    assert main(["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "--num-classes", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segfix eval: error: ")
    assert "expected class ids 0..2 or the ignore label 255, found 3, 4, 5, 6" in err[0]
    _write(tmp_path / "pred" / "extra.png", labels)
    assert main(["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "--num-classes", "7"]) == 0
    assert "1 of 2 predictions have no ground truth" in caplog.text and "extra.png" in caplog.text


@pytest.mark.parametrize(
    "label_format, stored, expected",
    [
        ("ade20k", [[1, 1, 2, 2, 0, 0]], [[1, 2, 2, 2, 0, 0]]),
        ("trainid", [[1, 1, 2, 2, 0, 0]], [[1, 2, 2, 2, 0, 0]]),
        ("cityscapes-labelid", [[7, 7, 8, 8, 0, 0]], [[7, 8, 8, 8, 0, 0]]),
    ],
)
def test_the_ignore_label_is_a_stored_value_and_never_freezes_a_class(tmp_path, label_format, stored, expected):
    """``--ignore-index 0`` names the stored 0; with ADE20K's encoding stored 1 is class 0 (wall), which moves."""
    stored_map = np.array(stored, np.uint8)
    _write(tmp_path / "preds" / "a.png", stored_map)
    offsets = np.zeros((2, 1, 6), np.int8)
    offsets[1, 0, 1] = 1  # pixel 1 takes its right neighbour's label
    offsets[1, 0, 3] = 1  # pixel 3 would take the ignore pixel's label: it never does
    formats.write_offsets(tmp_path / "offs" / "a.npz", offsets)
    args = ["refine", str(tmp_path / "preds"), "--offsets", str(tmp_path / "offs"), "--output", str(tmp_path / "out")]
    assert main([*args, "--label-format", label_format, "--ignore-index", "0", "--scale", "1"]) == 0
    np.testing.assert_array_equal(read_label(tmp_path / "out" / "a.png"), expected)


def test_metric_settings_that_make_no_sense_are_refused():
    from segfix.metrics import BoundaryStatistics

    for dilation in (-1, 0, 1.5, float("nan"), float("inf"), "0.02", True):
        with pytest.raises(ValueError, match="^boundary_iou_dilation: expected a fraction"):
            SegmentationMetrics(3, boundary_iou_dilation=dilation)
    for widths in ((-1, 2), (1, float("nan")), (), (1, float("inf")), "12"):
        with pytest.raises(ValueError, match="^widths: expected a non-empty list of positive, finite"):
            BoundaryStatistics(3, widths=widths)
    for counts in ([2, -1, 5], [3, 3, 1, -1], "zz"):
        with pytest.raises(ValueError, match="RLE counts"):
            formats.rle_decode({"size": [2, 3], "counts": counts})
