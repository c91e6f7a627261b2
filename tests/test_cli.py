"""The argument parser: every command and option has help, mistakes get suggestions, --help loads nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import pytest

import segfix
from segfix.cli import main


def test_stats_and_help(folders, capsys):
    assert main(["stats", str(folders / "gt"), "--num-classes", "5"]) == 0
    out = capsys.readouterr().out
    assert "| 1 px |" in out and "| **all** |" in out
    with pytest.raises(SystemExit):
        main(["refine", "--help"])
    assert "Existing outputs are skipped" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "segfix", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("demo", "refine", "offsets", "eval", "stats", "train", "convert-official"):
        assert command in out


def test_every_command_and_argument_has_help(capsys):
    from segfix.cli import build_parser, command_parsers, option_help

    commands = command_parsers(build_parser())
    assert {"refine", "offsets", "eval", "train", "tune", "demo", "models"} <= set(commands)
    for name, command in commands.items():
        assert command.description, name
        for dest, text in option_help(command).items():
            assert text, f"segfix {name} {dest}"
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"segfix-pytorch {segfix.__version__}"


def test_help_and_import_do_not_load_torch():
    """`segfix --help` answers at once: neither the parser nor `import segfix` imports torch, timm or numba."""
    code = (
        "import sys, segfix\n"
        "from segfix.cli import build_parser, command_parsers\n"
        "parser = build_parser()\n"
        "parser.format_help()\n"
        "helps = [command.format_help() for command in command_parsers(parser).values()]\n"
        "assert len(helps) > 5\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'numba', 'scipy') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    names = subprocess.run(
        [sys.executable, "-c", "import segfix; print(segfix.SegFix.__name__, segfix.metrics.__name__)"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert names.split() == ["SegFix", "segfix.metrics"]  # the names load on first use


def test_a_mistyped_command_or_choice_gets_a_suggestion(capsys):
    for argv, suggestion in (
        (["refin"], "did you mean 'refine'?"),
        (["refine", "p", "--kind", "semantc"], "'semantic'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and suggestion in capsys.readouterr().err
