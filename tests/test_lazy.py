"""Package faces import their names on first use, once, and refuse names they do not export."""

from __future__ import annotations

import subprocess
import sys

import pytest

import segfix


def test_a_face_resolves_each_name_from_its_home_once():
    import segfix.prediction as prediction
    from segfix.prediction.segfix_model import SegFix

    assert prediction.SegFix is SegFix and segfix.SegFix is SegFix
    assert "SegFix" in vars(prediction)  # kept: the next read is a plain attribute
    with pytest.raises(AttributeError, match="has no attribute 'Segfix'"):
        _ = prediction.Segfix


def test_importing_the_faces_loads_no_torch():
    code = (
        "import sys, segfix, segfix.hub, segfix.prediction, segfix.network, segfix.ops, segfix.jobs, segfix.training\n"
    )
    code += "print(sorted(m for m in ('torch', 'timm', 'numba') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
