"""segfix.metrics.modules: the same numbers as segfix.metrics, from summed states that sync across processes."""

import os

import numpy as np
import pytest
import torch

pytest.importorskip("torchmetrics")

from helpers import free_port  # noqa: E402
from segfix.metrics import SegmentationMetrics  # noqa: E402
from segfix.metrics.modules import BoundaryFScore, BoundaryIoU  # noqa: E402

NUM_CLASSES = 4


def blobs(seed: int, n: int = 3, shape=(40, 56)) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth of rectangles (with an ignore band) and a prediction that moves some of their edges."""
    rng = np.random.default_rng(seed)
    target = np.zeros((n, *shape), np.int64)
    for i in range(n):
        for _ in range(5):
            y, x = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
            target[i, y : y + rng.integers(4, 20), x : x + rng.integers(4, 30)] = rng.integers(1, NUM_CLASSES)
        target[i, :, :2] = 255
    pred = target.copy()
    pred[pred == 255] = 0
    noise = rng.random(pred.shape) < 0.05
    pred[noise] = rng.integers(0, NUM_CLASSES, noise.sum())
    pred = np.roll(pred, 1, axis=-1)
    return pred, target


def reference(pred, target):
    m = SegmentationMetrics(NUM_CLASSES, ignore_index=255, tolerances=(1, 2, 3))
    m.update(pred, target)
    return m.compute()


def test_values_equal_segmentation_metrics_per_class_and_averaged():
    pred, target = blobs(0)
    ref = reference(pred, target)
    f = BoundaryFScore(NUM_CLASSES, tolerances=(1, 2, 3), average="none")
    b = BoundaryIoU(NUM_CLASSES, average="none")
    for i in range(len(pred)):  # image by image: the counts add up
        f.update(torch.from_numpy(pred[i]), torch.from_numpy(target[i]))
        b.update(pred[i : i + 1], target[i : i + 1])
    per_class = f.compute().numpy()
    for j, t in enumerate((1, 2, 3)):
        np.testing.assert_allclose(per_class[:, j], ref.boundary_f[t], rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(b.compute().numpy(), ref.boundary_iou, rtol=0, atol=1e-12, equal_nan=True)
    macro = BoundaryFScore(NUM_CLASSES)
    macro.update(torch.from_numpy(pred), torch.from_numpy(target))
    expected = [ref.mean_boundary_f[t] for t in (1, 2, 3)]
    np.testing.assert_allclose(macro.compute().numpy(), expected, rtol=0, atol=1e-12)
    biou = BoundaryIoU(NUM_CLASSES)
    biou.update(torch.from_numpy(pred), torch.from_numpy(target))
    assert float(biou.compute()) == pytest.approx(ref.mean_boundary_iou, abs=1e-12)


def test_logits_are_argmaxed_and_perfect_maps_score_one():
    pred, target = blobs(1)
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred), NUM_CLASSES).permute(0, 3, 1, 2).float()
    from_logits, from_labels = BoundaryFScore(NUM_CLASSES), BoundaryFScore(NUM_CLASSES)
    from_logits.update(logits * 3.0 - 1.0, torch.from_numpy(target))
    from_labels.update(torch.from_numpy(pred), torch.from_numpy(target))
    torch.testing.assert_close(from_logits.compute(), from_labels.compute())
    perfect = BoundaryIoU(NUM_CLASSES)
    clean = np.where(target == 255, 0, target)
    perfect.update(clean, clean)
    assert float(perfect.compute()) == 1.0


def test_bad_input_names_what_was_expected():
    metric = BoundaryFScore(NUM_CLASSES)
    with pytest.raises(ValueError, match=r"expected float scores \(N, 4, H, W\)"):
        metric.update(torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"preds: expected the target's shape \(1, 8, 8\), got \(1, 8, 9\)"):
        metric.update(torch.zeros(1, 8, 9, dtype=torch.long), torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="expected a torch tensor or numpy array"):
        metric.update([[0]], torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="average: expected 'macro' or 'none'"):
        BoundaryIoU(NUM_CLASSES, average="micro")
    with pytest.raises(ValueError, match="tolerances"):
        BoundaryFScore(NUM_CLASSES, tolerances=())


def _ddp_worker(rank: int, world: int, port: int, results) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        pred, target = blobs(2, n=4)
        f = BoundaryFScore(NUM_CLASSES, average="none")
        b = BoundaryIoU(NUM_CLASSES, average="none")
        f.update(torch.from_numpy(pred[rank::world]), torch.from_numpy(target[rank::world]))  # half each
        b.update(torch.from_numpy(pred[rank::world]), torch.from_numpy(target[rank::world]))
        results[rank] = (f.compute().numpy(), b.compute().numpy())
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_sync_to_the_single_process_values():
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_ddp_worker, args=(2, free_port(), results), nprocs=2, join=True)
    pred, target = blobs(2, n=4)
    ref = reference(pred, target)
    for rank in (0, 1):
        fscore, biou = results[rank]
        np.testing.assert_allclose(fscore[:, 0], ref.boundary_f[1], atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(biou, ref.boundary_iou, atol=1e-12, equal_nan=True)


def _brute_force_fscore(pred: np.ndarray, target: np.ndarray, c: int, t: float) -> float:
    """F at tolerance ``t`` for class ``c`` of one map: every boundary pixel's distance to the other map's
    boundary by brute force (scipy's cdist), precision and recall in float64."""
    from scipy.spatial.distance import cdist

    from segfix.metrics import mask_boundary

    pb, gb = np.argwhere(mask_boundary(pred == c)), np.argwhere(mask_boundary(target == c))
    distance = cdist(pb, gb)
    precision = (distance.min(1) <= t).mean()
    recall = (distance.min(0) <= t).mean()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("shift", [2, 4, 7])
def test_boundaries_off_by_more_than_the_tolerance_score_as_the_formula_says(shift):
    """Precision + recall < 1 here: the F-score is 2PR/(P+R), not 2PR clamped to a denominator of 1."""
    target = np.zeros((48, 48), np.int64)
    target[10:34, 8:30] = 1
    pred = np.roll(target, shift, axis=1)
    scores = {}
    for t in (1.0, 2.0):
        expected = scores[t] = np.mean([_brute_force_fscore(pred, target, c, t) for c in (0, 1)])
        metric = BoundaryFScore(2, tolerances=(t,))
        metric.update(torch.from_numpy(pred), torch.from_numpy(target))
        reference_metric = SegmentationMetrics(2, tolerances=(t,))
        reference_metric.update(pred, target)
        assert float(metric.compute()) == pytest.approx(expected, abs=1e-12)
        assert reference_metric.compute().mean_boundary_f[t] == pytest.approx(expected, abs=1e-12)
    assert 0 < scores[1.0] < (0.5 if shift > 2 else 1)  # P + R < 1: the case the clamp got wrong


def test_the_bundled_example_scores_alike_in_both_metric_apis():
    import segfix

    example = segfix.load_example()
    metric = BoundaryFScore(example.num_classes, tolerances=(1,))
    metric.update(torch.from_numpy(example.coarse.astype(np.int64)), torch.from_numpy(example.reference))
    reference_metric = SegmentationMetrics(example.num_classes, tolerances=(1,))
    reference_metric.update(example.coarse, example.reference)
    expected = reference_metric.compute().mean_boundary_f[1]
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-12) and expected > 0.2


def test_labels_outside_the_classes_are_refused_not_dropped():
    metric = BoundaryFScore(3)
    target = torch.tensor([[0, 1, 2, 6]])
    with pytest.raises(ValueError, match=r"target: expected class ids 0\.\.2 or the ignore label 255, found 6"):
        metric.update(target.clone(), target)
