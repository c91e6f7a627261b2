"""The type checker runs over src/ and over a typed usage file, as a user's mypy would see the API."""

from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_is_clean_over_the_package_and_the_usage_file(tmp_path):
    # The settings (files, overrides) are pyproject.toml's [tool.mypy]: the same run as `mypy` in the repo.
    stdout, stderr, status = api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(ROOT / ".mypy_cache")]
    )
    assert status == 0, f"mypy found problems:\n{stdout}{stderr}"
    assert "Success: no issues found" in stdout
