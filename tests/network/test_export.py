"""The network exports: torch.export and ONNX (checked against onnxruntime). The label step stays outside."""

import numpy as np
import pytest
import torch

import segfix


@pytest.fixture(scope="module")
def network():
    model = segfix.SegFix.from_pretrained("camvid-lite0-v4", map_location="cpu").float().eval()
    return model, model.normalize(torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0)))


def test_torch_export_matches_eager(network):
    model, example = network
    program = torch.export.export(model.net, (example,))
    with torch.inference_mode():
        expected = model.net(example)
        got = program.module()(example)
    stride = model.net.output_stride  # 2 for the bundled models
    assert [tuple(t.shape) for t in got] == [(1, 2, 96 // stride, 128 // stride), (1, 8, 96 // stride, 128 // stride)]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_onnx_export_runs_in_onnxruntime_and_refines_like_the_model(network, tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model, example = network
    path = tmp_path / "segfix.onnx"
    torch.onnx.export(
        model.net, (example,), str(path), dynamo=True, input_names=["images"],
        output_names=["boundary_logits", "direction_logits"],
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boundary_logits, direction_logits = session.run(None, {"images": example.numpy()})
    with torch.inference_mode():
        expected = model.net(example)
    np.testing.assert_allclose(boundary_logits, expected[0].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(direction_logits, expected[1].numpy(), rtol=1e-4, atol=1e-4)
    # The deployment recipe of docs/ecosystem.md: upsample the exported logits, then the label step in numpy. It
    # must refine as the model itself does with the same settings (fp32, whole image at its own size, the vote).
    plain = model.with_settings(
        precision="fp32", inference="whole", flip_tta=False, input_scale=1.0, min_short_side=0,
        max_network_pixels=0, min_network_scale=0.0, thin_guard=0, direction_vote=True,
    )  # fmt: skip
    decision = plain.settings.decision
    example_image = segfix.load_example()
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).fromarray(example_image.image).resize((128, 96)))
    coarse = example_image.coarse[::4, ::4][:96, :128].copy()
    net_input = plain.normalize(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    boundary_logits, direction_logits = session.run(None, {"images": net_input.numpy()})
    size = net_input.shape[-2:]
    align = plain.align_corners
    prob = torch.nn.functional.interpolate(
        torch.from_numpy(boundary_logits).softmax(1), size=size, mode="bilinear", align_corners=align
    )
    logits = torch.nn.functional.interpolate(
        torch.from_numpy(direction_logits), size=size, mode="bilinear", align_corners=align
    )
    moving = (prob[0, 1] > decision.boundary_threshold).numpy()
    refined = segfix.vote_labels(
        coarse, logits[0].softmax(0)[:, moving].T.contiguous().numpy(), moving,
        scale=decision.semantic_scale, min_vote_share=decision.min_vote_share, iterations=decision.iterations,
    )  # fmt: skip
    by_model = plain.refine(image, coarse)
    assert (refined != coarse).sum() > 20  # the recipe moves pixels: the comparison below means something
    # Folded batch norms and ONNX's kernels differ from eager by float rounding: a pixel whose probability sits
    # on the threshold may fall either way, never more than a few of them.
    assert (refined != by_model).mean() < 1e-3, (refined != by_model).sum()
