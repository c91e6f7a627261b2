"""Batch norms folded into the convolutions before them, for inference.

In eval mode a batch norm is an affine map per channel, so ``bn(conv(x))`` equals one convolution with
rescaled weights and a bias. Under bf16 autocast on the CPU the batch norms run in fp32 and were a quarter
of the network's time (1024x2048, camvid-lite0-v3 on an AMX Xeon); folded, they cost nothing.

:func:`fold_batchnorm` works on any network, not only SegFix's: which batch norm reads which convolution is
found by running the network once on a small probe image, and the folded copy is checked against the
original on that probe before it is returned.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["FoldingError", "fold_batchnorm"]


class FoldingError(RuntimeError):
    """The folded network did not reproduce the original on the probe image."""


def fold_batchnorm(
    network: nn.Module, probe: torch.Tensor, *, rtol: float = 1e-3, atol: float = 1e-4
) -> tuple[nn.Module, int]:
    """A copy of ``network`` (in eval mode) with every batch norm that directly reads a convolution's output
    folded into that convolution; ``network`` itself is left as it is.

    Args:
        network: any module with floating-point parameters; it runs once in eval mode on ``probe``.
        probe: a small input ``(N, C, H, W)`` the network accepts (for SegFix, ``(1, 3, 64, 64)``).
        rtol: relative tolerance: how closely every output of the copy must match the original's on ``probe``.
        atol: absolute tolerance, likewise.

    Returns:
        (the folded copy, how many batch norms were folded).

    Raises:
        FoldingError: the copy's outputs differ from the original's beyond ``rtol``/``atol`` (a convolution
            whose output is also read elsewhere would do that); nothing is returned half-folded.
    """
    dtype = next(network.parameters()).dtype
    # half-precision weights are folded in fp32, so that the rescaling itself rounds once
    work_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    folded = copy.deepcopy(network).eval().to(work_dtype)
    pairs = _conv_bn_pairs(folded, probe.to(work_dtype))
    for conv_name, bn_name in pairs:
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        activation = _activation_after(bn)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d) or activation is None:
            continue  # cannot happen: _conv_bn_pairs only pairs these
        folded.set_submodule(conv_name, fuse_conv_bn_eval(conv, bn))
        folded.set_submodule(bn_name, activation)
    reference = network if work_dtype == dtype else copy.deepcopy(network).to(work_dtype)
    _check_same_outputs(reference, folded, probe.to(work_dtype), rtol, atol)
    return folded.to(dtype), len(pairs)


def _conv_bn_pairs(network: nn.Module, probe: torch.Tensor) -> list[tuple[str, str]]:
    """(conv, batch norm) module names where the batch norm's input is the very tensor the conv returned,
    each module called once; batch norms whose forward is not plain (or plain + activation) are skipped."""
    produced: dict[int, str] = {}
    calls: dict[str, int] = {}
    pairs: dict[str, str] = {}
    kept: list[torch.Tensor] = []  # the conv outputs stay alive, so that no other tensor reuses their ids
    handles = []
    for name, module in network.named_modules():
        if isinstance(module, nn.Conv2d):  # subclasses too (timm's Conv2dSame); the output check catches misfits
            handles.append(module.register_forward_hook(_record_output(name, produced, calls, kept)))
        elif isinstance(module, nn.BatchNorm2d) and _activation_after(module) is not None:
            handles.append(module.register_forward_pre_hook(_record_input(name, produced, calls, pairs)))
    try:
        with torch.no_grad():
            network(probe)
    finally:
        for handle in handles:
            handle.remove()
    return [(conv, bn) for bn, conv in pairs.items() if calls[conv] == 1 and calls[bn] == 1]


def _record_output(name: str, produced: dict[int, str], calls: dict[str, int], kept: list[torch.Tensor]):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        calls[name] = calls.get(name, 0) + 1
        produced[id(output)] = name
        kept.append(output)

    return hook


def _record_input(name: str, produced: dict[int, str], calls: dict[str, int], pairs: dict[str, str]):
    def hook(module: nn.Module, inputs: tuple) -> None:
        calls[name] = calls.get(name, 0) + 1
        conv = produced.get(id(inputs[0]))
        if conv is not None:
            pairs[name] = conv

    return hook


def _activation_after(bn: nn.Module) -> nn.Module | None:
    """What is left of ``bn`` once its affine map is folded away: identity, or the activation it applies
    (SegFix's ``BNAct``, timm's ``BatchNormAct2d``); None for a batch norm whose forward is unknown."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    activation = getattr(bn, "activation", None)
    if isinstance(activation, str):  # segfix.network.segfix_net.BNAct
        # In place, as the batch norm's own output was: an out-of-place activation on the heads' full-width
        # maps cost 14 ms each at 1024x2048 (a second reader of the convolution would fail the probe check).
        return nn.ReLU(inplace=True) if activation == "relu" else nn.LeakyReLU(0.01, inplace=True)
    if type(bn).__name__ == "BatchNormAct2d" and hasattr(bn, "act") and hasattr(bn, "drop"):  # timm
        return nn.Sequential(cast(nn.Module, bn.drop), cast(nn.Module, bn.act))
    return None


def _check_same_outputs(original: nn.Module, folded: nn.Module, probe: torch.Tensor, rtol: float, atol: float):
    was_training = original.training
    original.eval()
    try:
        with torch.no_grad():
            expected, actual = _as_tuple(original(probe)), _as_tuple(folded(probe))
    finally:
        original.train(was_training)
    for i, (e, a) in enumerate(zip(expected, actual)):
        if not torch.allclose(e, a, rtol=rtol, atol=atol * max(1.0, float(e.abs().max()))):
            worst = float((e - a).abs().max())
            raise FoldingError(
                f"fold_batchnorm: output {i} of the folded network differs from the original by up to {worst:.3g} "
                "on the probe; keep the original network"
            )


def _as_tuple(outputs) -> tuple[torch.Tensor, ...]:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
