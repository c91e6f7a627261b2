"""SegFix model: input kinds, batching, refinement semantics, sliding windows, save/load and the Hub cache."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from helpers import free_port, random_image
from segfix import ModelLoadError, SegFix


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


def test_save_load_round_trip(model, tmp_path):
    model = model.with_settings(semantic_scale=2)
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    loaded = SegFix.from_pretrained(tmp_path / "m")
    assert not loaded.training
    img = random_image()
    np.testing.assert_array_equal(loaded.predict(img).boundary_prob, model.predict(img).boundary_prob)
    np.testing.assert_array_equal(loaded.predict_offsets(img), model.predict_offsets(img))
    overridden = SegFix.from_pretrained(tmp_path / "m", semantic_scale=1, inference="sliding")
    assert overridden.settings.decision.semantic_scale == 1 and overridden.settings.inference.mode == "sliding"
    overridden.save_pretrained(tmp_path / "m2")
    stored = json.loads((tmp_path / "m2" / "config.json").read_text())
    assert stored["decision"]["semantic_scale"] == 1 and stored["inference"]["mode"] == "sliding"
    assert stored["network"] == model.config["network"]


def test_load_from_seeded_hub_cache_offline(model, tmp_path, monkeypatch):
    import huggingface_hub.constants

    model.save_pretrained(tmp_path / "m")
    seed_cache(tmp_path / "m", tmp_path / "cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    loaded = SegFix.from_pretrained("org/segfix-tiny", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(loaded.predict_offsets(random_image()), model.predict_offsets(random_image()))
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
    np.testing.assert_array_equal(loaded.predict_offsets(random_image()), model.predict_offsets(random_image()))
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
        SegFix.from_pretrained(folder).predict_offsets(random_image()), model.predict_offsets(random_image())
    )


def test_from_pretrained_takes_the_mixins_map_location(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    loaded = SegFix.from_pretrained(tmp_path / "m", map_location="cpu")
    assert loaded.device.type == "cpu"
    with pytest.raises(ValueError, match="HTTPS_PROXY"):
        SegFix.from_pretrained(tmp_path / "m", proxies={"https": "http://127.0.0.1:1"})
    with pytest.raises(ValueError, match="disagree"):
        SegFix.from_pretrained(tmp_path / "m", device="cpu", map_location="meta")
