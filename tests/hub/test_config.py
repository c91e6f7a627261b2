"""Settings groups: frozen, validated, nested in config.json, flat configs still load, tuning never mutates."""

from __future__ import annotations

import json

import numpy as np
import pytest

import segfix
from helpers import TINY
from segfix.hub.config import split_config
from segfix.hub.mixin import ModelLoadError
from segfix.hub.settings import ModelSettings


def test_direction_threshold_became_two_names_and_old_configs_still_load():
    vote = split_config({"decision": {"direction_vote": True, "direction_threshold": 0.3}})[1].decision
    argmax = split_config({"direction_threshold": 0.4})[1].decision
    assert (vote.min_vote_share, vote.min_direction_confidence) == (0.3, 0.0)
    assert (argmax.min_direction_confidence, argmax.min_vote_share) == (0.4, 0.0)
    with pytest.raises(TypeError, match="min_direction_confidence .*min_vote_share"):
        segfix.SegFix(**TINY).with_settings(direction_threshold=0.3)


def test_model_saves_nested_and_the_flat_form_still_loads(tmp_path):
    model = segfix.SegFix(**TINY).with_settings(semantic_scale=1, flip_tta=True, min_short_side=32)
    model.save_pretrained(tmp_path / "nested")
    stored = json.loads((tmp_path / "nested" / "config.json").read_text())
    assert set(stored) == {"network", "preprocessing", "inference", "decision"}
    assert stored["decision"]["semantic_scale"] == 1 and stored["inference"]["flip_tta"] is True
    # The flat form of earlier versions: every key at the top.
    flat = {**stored["network"], **model.settings.flat()}
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "config.json").write_text(json.dumps(flat))
    (tmp_path / "flat" / "model.safetensors").write_bytes((tmp_path / "nested" / "model.safetensors").read_bytes())
    a = segfix.SegFix.from_pretrained(tmp_path / "nested")
    b = segfix.SegFix.from_pretrained(tmp_path / "flat")
    assert a.settings == b.settings == model.settings and a.config == b.config
    image = np.random.default_rng(0).integers(0, 255, (24, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(a.predict_offsets(image), b.predict_offsets(image))


def test_bad_nested_configs_name_the_key(tmp_path):
    model = segfix.SegFix(**TINY)
    model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    config["decision"]["semantic_scael"] = 2
    path.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="semantic_scael"):
        segfix.SegFix.from_pretrained(tmp_path / "m")
    config["decision"].pop("semantic_scael")
    config["network"]["widht"] = 3
    path.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="widht"):
        segfix.SegFix.from_pretrained(tmp_path / "m")


def test_split_config_reads_both_forms():
    network, settings = split_config({"backbone": "x", "semantic_scale": 1, "inference": "whole"})
    assert network == {"backbone": "x"} and settings.decision.semantic_scale == 1 and settings.inference.mode == "whole"
    network, nested = split_config(
        {"network": {"backbone": "x"}, **ModelSettings().replace(semantic_scale=1, inference="whole").as_config()}
    )
    assert network == {"backbone": "x"} and nested == settings


def test_old_names_are_translated_in_one_place():
    from segfix.hub.config import LEGACY_NAMES, translate_legacy_names

    assert set(LEGACY_NAMES) == {"direction_threshold", "rule", "min_share"}
    assert translate_legacy_names({"direction_threshold": 0.4}) == {"min_direction_confidence": 0.4}
    assert translate_legacy_names({"direction_threshold": 0.4, "direction_vote": True}) == {
        "min_vote_share": 0.4,
        "direction_vote": True,
    }
    assert translate_legacy_names({"rule": "vote", "min_share": 0.2}) == {"direction_vote": True, "min_vote_share": 0.2}
    assert translate_legacy_names({"rule": "argmax"}) == {"direction_vote": False}
    with pytest.raises(ValueError, match="rule: expected 'argmax' or 'vote', got 'nearest'"):
        translate_legacy_names({"rule": "nearest"})
