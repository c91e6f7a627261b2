"""The documentation builds with warnings as errors, and the README's commands exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr  # griffe's docstring warnings count as errors too
    assert (tmp_path / "api" / "index.html").is_file()


def test_readme_commands_are_make_targets():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"^make (\w[\w-]*)", readme, flags=re.M):
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"README runs 'make {target}', Makefile lacks it"
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert shutil.which("make") is not None


DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


@pytest.mark.parametrize("path", [p for p in DOC_FILES if _python_blocks(p)], ids=lambda p: p.name)
def test_every_python_snippet_runs_as_pasted(path, tmp_path, monkeypatch):
    """Each page's snippets run in order, in one namespace, in a fresh folder, with warnings as errors."""
    import warnings

    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__snippet__"}
    for i, block in enumerate(_python_blocks(path)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            exec(compile(block, f"{path.name} snippet {i + 1}", "exec"), namespace)  # noqa: S102


def test_the_snippets_cover_the_pages_users_paste_from():
    pages = {p.name for p in DOC_FILES if _python_blocks(p)}
    assert {"README.md", "quickstart.md", "concepts.md", "training.md"} <= pages


@pytest.mark.parametrize("name", ["quickstart.ipynb", "train_eval.ipynb"])
def test_notebooks_are_committed_with_clean_outputs(name):
    """nbmake re-runs the notebooks; this checks what a reader sees on GitHub: outputs, and no warnings."""
    import json

    cells = [c for c in json.loads((ROOT / "examples" / name).read_text())["cells"] if c["cell_type"] == "code"]
    assert all(c.get("outputs") for c in cells[1:]), "every cell after the imports shows its result"
    for cell in cells:
        for output in cell.get("outputs", []):
            assert output.get("name") != "stderr", "".join(output.get("text", ""))
            text = "".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
            assert "Warning" not in text and "array([" not in text and "Sequential(" not in text


def test_every_test_the_threat_model_names_exists():
    """docs/security.md gives one test per promise: each must exist, so that no promise is held by nothing."""
    text = (ROOT / "docs" / "security.md").read_text()
    named = set(re.findall(r"`(test_\w+)`", text))
    defined = {
        m
        for path in (ROOT / "tests").rglob("test_*.py")
        for m in re.findall(r"^def (test_\w+)", path.read_text(), re.M)
    }
    assert named and not named - defined, sorted(named - defined)


def test_examples_and_readme_use_the_recommended_model():
    """The quickstart notebook, the example scripts and the README show the model list_models() recommends."""
    import segfix

    recommended = segfix.list_models()[0]
    for path in [ROOT / "README.md", *sorted((ROOT / "examples").glob("quickstart*"))]:
        named = set(re.findall(r"from_pretrained\([\\\"']+(camvid-[\w-]+)", path.read_text()))
        assert named == {recommended}, (path.name, named)


def test_the_figures_are_drawn_from_the_published_numbers(tmp_path):
    """tools/make_figures.py draws the docs' figures; the gains it plots are the ones docs/results.md tables."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "tools" / "make_figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    assert figures.main(["--output", str(tmp_path)]) == 0
    for image in ("targets.png", "camvid-v5-gains.png", "v5-speed.png"):
        assert (tmp_path / image).stat().st_size > 0
    table = json.loads((ROOT / "docs" / "data" / "camvid-lite0-v5-val.json").read_text())
    results = (ROOT / "docs" / "results.md").read_text()
    for name, iou, f1 in zip(table["classes"], table["iou_delta"], table["f1_delta"]):
        rows = [line.replace("**", "") for line in results.splitlines()]
        row = next(line for line in rows if line.startswith(f"| {name} |") and f"({iou:+.2f})" in line)
        assert f"({f1:+.2f})" in row, row
    for image in ("targets.png", "camvid-v5-gains.png", "v5-speed.png"):
        assert f"images/{image}" in (ROOT / "docs" / "concepts.md").read_text() + results
