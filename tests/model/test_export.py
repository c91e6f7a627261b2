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
    # The deployment recipe of docs/ecosystem.md: upsample the exported logits, then the label step in numpy.
    size = example.shape[-2:]
    prob = torch.nn.functional.interpolate(torch.from_numpy(boundary_logits).softmax(1), size=size, mode="bilinear")
    logits = torch.nn.functional.interpolate(torch.from_numpy(direction_logits), size=size, mode="bilinear")
    moving = (prob[0, 1] > model.settings.decision.boundary_threshold).numpy()
    coarse = np.zeros(size, np.uint8)
    coarse[:, 64:] = 3
    refined = segfix.vote_labels(
        coarse, logits[0].softmax(0).numpy(), moving, scale=model.settings.decision.semantic_scale
    )
    assert refined.shape == coarse.shape and set(np.unique(refined)) <= {0, 3}
