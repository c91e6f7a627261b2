"""precision='auto': bf16 only where the hardware computes it, the same answer for inference and training."""

import pytest
import torch

from segfix.network.precision import autocast_context, cpu_computes_bf16, resolve_precision
from segfix.training.train import training_precision

ZEN4 = "fpu vme avx2 avx512f avx512bw avx512_bf16 avx512_vnni"
SAPPHIRE_RAPIDS = "fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"
SKYLAKE_X = "fpu avx2 avx512f avx512bw avx512vl"  # AVX-512 without bf16 instructions: emulated, slow
HASWELL = "fpu avx avx2 fma"


def cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    return path


@pytest.mark.parametrize(
    "flags, expected", [(ZEN4, True), (SAPPHIRE_RAPIDS, True), (SKYLAKE_X, False), (HASWELL, False)]
)
def test_bf16_instructions_are_read_from_the_flags_line(tmp_path, flags, expected):
    assert cpu_computes_bf16(cpuinfo(tmp_path, flags)) is expected


def test_a_missing_cpuinfo_means_no_bf16(tmp_path):
    assert cpu_computes_bf16(tmp_path / "absent") is False
    (tmp_path / "noflags").write_text("processor : 0\n")
    assert cpu_computes_bf16(tmp_path / "noflags") is False


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_is_the_same_for_inference_and_training(monkeypatch, native, expected):
    import segfix.network.precision as precision

    monkeypatch.setattr(precision, "cpu_computes_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == expected
    assert training_precision(torch.device("cpu")) == expected
    context = autocast_context(torch.device("cpu"), "auto")
    with context:
        y = torch.nn.functional.linear(torch.ones(2, 4), torch.ones(3, 4))
    assert y.dtype == (torch.bfloat16 if native else torch.float32)


def test_cuda_auto_follows_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", torch.device("cuda:0")) == "fp32"


def test_explicit_precisions_pass_through_and_others_are_refused():
    for name in ("fp32", "bf16", "fp16"):
        assert resolve_precision(name, "cpu") == name
    with pytest.raises(ValueError, match=r"precision: expected one of 'auto', 'fp32', 'bf16', 'fp16', got 'fp64'"):
        resolve_precision("fp64", "cpu")
