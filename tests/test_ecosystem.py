"""segfix after the segmentation libraries people use: smp logits, transformers' SegFormer post-processing.

Tiny, randomly initialised models built offline stand in for trained ones: what is tested is the hand-over
(shapes, types, devices, the logits hint), not their accuracy.
"""

import numpy as np
import pytest
import torch

import segfix

smp = pytest.importorskip("segmentation_models_pytorch")
transformers = pytest.importorskip("transformers")

NUM_CLASSES = 11
H, W = 64, 96


@pytest.fixture(scope="module")
def refiner():
    return segfix.SegFix.from_pretrained("camvid-lite0-v4", min_short_side=0, map_location="cpu").eval()


def images(n=2, seed=0) -> torch.Tensor:
    return torch.rand(n, 3, H, W, generator=torch.Generator().manual_seed(seed))


def test_after_a_segmentation_models_pytorch_unet(refiner):
    torch.manual_seed(0)
    net = smp.Unet(encoder_name="resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8),
                   classes=NUM_CLASSES).eval()  # fmt: skip
    batch = images()
    with torch.inference_mode():
        logits = net((batch - 0.5) / 0.25)
    assert logits.shape == (2, NUM_CLASSES, H, W)
    with pytest.raises(TypeError, match=r"logits.*argmax"):
        refiner.refine(batch, logits)
    coarse = logits.argmax(1)
    refined = refiner.refine(batch, coarse)
    assert isinstance(refined, torch.Tensor) and refined.shape == coarse.shape and refined.dtype == coarse.dtype
    # Refinement only copies labels the map already holds, from pixels inside the image.
    for before, after in zip(coarse, refined):
        assert set(after.unique().tolist()) <= set(before.unique().tolist())
    # Per image, the same as refining each image alone, and numpy in gives numpy out.
    alone = refiner.refine(batch[1], coarse[1])
    torch.testing.assert_close(alone, refined[1], rtol=0, atol=0)
    image_hwc = (batch[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    out = refiner.refine(image_hwc, coarse[0].numpy().astype(np.uint8))
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == (H, W)


def test_after_a_transformers_segformer(refiner):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(0)
    config = SegformerConfig(
        num_labels=NUM_CLASSES,
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 24, 32],
        num_attention_heads=[1, 1, 1, 1],
        decoder_hidden_size=16,
    )
    net = SegformerForSemanticSegmentation(config).eval()
    processor = SegformerImageProcessor(do_resize=False, do_rescale=False, do_normalize=False)
    batch = images(seed=1)
    with torch.inference_mode():
        outputs = net(pixel_values=batch)
    maps = processor.post_process_semantic_segmentation(outputs, target_sizes=[(H, W)] * 2)
    assert isinstance(maps, list) and maps[0].shape == (H, W)
    refined = refiner.refine(list(batch), maps)  # a list of images and the list of maps, as they come
    assert isinstance(refined, list) and len(refined) == 2
    for before, after, image in zip(maps, refined, batch):
        assert after.shape == before.shape and after.dtype == before.dtype
        torch.testing.assert_close(after, refiner.refine(image, before), rtol=0, atol=0)
    with pytest.raises(TypeError, match="logits"):
        refiner.refine(batch[0], outputs.logits[0])  # (C, h, w) at a quarter of the size
