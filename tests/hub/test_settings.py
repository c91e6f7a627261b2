"""Settings groups: frozen, validated, nested in config.json, flat configs still load, tuning never mutates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import segfix
from helpers import TINY
from segfix.hub.settings import FLAT_NAMES, DecisionSettings, InferenceSettings, Preprocessing


def test_groups_are_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DecisionSettings().semantic_scale = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="semantic_scale"):
        DecisionSettings(semantic_scale=0)
    with pytest.raises(ValueError, match="inference"):
        InferenceSettings(mode="tiles")
    with pytest.raises(ValueError, match="min_short_side"):
        Preprocessing(min_short_side=-1)
    assert InferenceSettings(window_size=90).stride == (60, 60)
    assert Preprocessing(min_short_side=720).network_scale((360, 480)) == 2.0
    with pytest.raises(ValueError, match="max_network_pixels"):
        Preprocessing(max_network_pixels=-1)


def test_the_network_works_at_most_at_max_network_pixels():
    capped = Preprocessing(min_short_side=720, max_network_pixels=720 * 960)
    assert capped.network_scale((360, 480)) == 2.0  # enlarged to exactly the budget: unchanged
    assert capped.network_scale((1024, 2048)) == pytest.approx((720 * 960 / (1024 * 2048)) ** 0.5)
    assert capped.network_scale((720, 960)) == 1.0
    seen = []
    model = segfix.SegFix(**TINY).with_settings(max_network_pixels=48 * 64)
    model.net.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    prob, logits = model.network_outputs(image).full()
    assert seen == [(48, 64)] and prob.shape == (1, 96, 128) and logits.shape == (1, 8, 96, 128)
    labels = np.random.default_rng(1).integers(0, 3, (96, 128)).astype(np.uint8)
    assert model.refine(image, labels).shape == (96, 128)


def test_large_frames_are_never_shrunk_below_min_network_scale():
    """The pixel budget brings a large frame down, but not below the floor; small frames and a lower
    input_scale are as before (CamVid's 480x360 at 1.5, the bundled photo's 600x400 at 1.27)."""
    policy = Preprocessing(min_short_side=540, max_network_pixels=540 * 720, min_network_scale=0.75)
    assert policy.network_scale((360, 480)) == 1.5
    assert policy.network_scale((400, 600)) == pytest.approx((540 * 720 / (400 * 600)) ** 0.5)  # 1.27
    assert policy.network_scale((1024, 2048)) == 0.75  # the budget alone: 0.43
    assert policy.network_scale((2160, 3840)) == 0.75
    assert policy.network_scale((720, 960)) == pytest.approx(0.75)  # budget: exactly 0.75
    assert (
        Preprocessing(max_network_pixels=100, min_network_scale=0.75, input_scale=0.5).network_scale((1024, 2048))
        == 0.5
    )  # an input_scale below the floor is the user's own choice
    assert Preprocessing(max_network_pixels=540 * 720).network_scale((1024, 2048)) < 0.44  # 0: off, as before
    for bad in (-0.1, 4.5, float("nan"), True, "0.75"):
        with pytest.raises(ValueError, match="min_network_scale: expected a factor in"):
            Preprocessing(min_network_scale=bad)


def test_the_facade_takes_settings_groups_and_refuses_a_flat_setting():
    groups = {(group, name) for group, name in FLAT_NAMES.values()}
    assert len(groups) == len(FLAT_NAMES)  # no field reached by two names
    assert FLAT_NAMES["inference"] == ("inference", "mode")
    model = segfix.SegFix(**TINY, decision=DecisionSettings(iterations=3), inference={"flip_tta": True})
    assert model.settings.decision.iterations == 3 and model.settings.inference.flip_tta
    assert model.settings.preprocessing == segfix.SegFix(**TINY).settings.preprocessing
    with pytest.raises(TypeError, match=r"\['flip_tta'\] are settings, not network arguments.*with_settings"):
        segfix.SegFix(**TINY, flip_tta=True)
    with pytest.raises(TypeError, match=r"inference: expected InferenceSettings\(...\) or a mapping.*with_settings"):
        segfix.SegFix(**TINY, inference="sliding")
    with pytest.raises(TypeError, match="unexpected keyword argument 'backbnoe'"):
        segfix.SegFix(backbnoe="test_resnet")


def test_settings_are_read_from_their_group_and_an_assignment_says_how_to_change_one():
    model = segfix.SegFix(**TINY)
    before = model.settings
    with pytest.raises(AttributeError, match=r"with_settings\(flip_tta=True\)"):
        model.flip_tta = True
    assert model.settings is before and not hasattr(model, "flip_tta")
    with pytest.raises(AttributeError, match=r"read model.settings.get\('flip_tta'\)"):
        _ = model.flip_tta
    changed = model.with_settings(flip_tta=True)
    assert changed.settings.inference.flip_tta and changed.config["inference"]["flip_tta"] is True
    with pytest.raises(ValueError, match="semantic_scale"):
        model.with_settings(semantic_scale=0)


def test_with_settings_shares_the_network_and_leaves_the_model_alone():
    model = segfix.SegFix(**TINY)
    other = model.with_settings(direction_vote=True, inference="whole")
    assert (
        other.net is model.net and other.settings.decision.direction_vote and other.settings.inference.mode == "whole"
    )
    assert not model.settings.decision.direction_vote and model.settings.inference.mode == "auto"
    with pytest.raises(TypeError, match="unknown setting"):
        model.with_settings(flip=True)


def test_with_settings_renormalises_with_new_mean_and_std():
    model = segfix.SegFix(**TINY)
    other = model.with_settings(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    images = torch.rand(1, 3, 4, 4)
    torch.testing.assert_close(other.normalize(images), images)
    torch.testing.assert_close(model.normalize(images), (images - 0.5) / 0.5)  # the model keeps its own


def test_torch_compile_is_a_saved_setting_outside_the_module_tree(tmp_path):
    eager = segfix.SegFix(**TINY)
    model = segfix.SegFix(**TINY).with_settings(torch_compile=True)
    assert model.config["inference"]["torch_compile"] is True
    assert set(model.state_dict()) == set(eager.state_dict())
    with pytest.raises(ValueError, match="torch_compile"):
        segfix.SegFix(**TINY).with_settings(torch_compile="yes")


@pytest.mark.slow
def test_a_compiled_model_refines_as_the_eager_one():
    import torch

    torch.manual_seed(0)
    # fp32: under bf16 autocast a fused (compiled) kernel rounds differently from the eager ones, by up to 2e-4
    eager = segfix.SegFix(**TINY).with_settings(boundary_threshold=0.3, precision="fp32").eval()
    compiled = eager.with_settings(torch_compile=True)
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    prob_e, logits_e = eager.network_outputs(image).full()
    prob_c, logits_c = compiled.network_outputs(image).full()
    torch.testing.assert_close(prob_c, prob_e, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits_c, logits_e, atol=1e-4, rtol=1e-4)
