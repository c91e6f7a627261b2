"""An output folder a job may write into and resume: never an input folder, never a file the job did not write,
and the record of what made it (model, settings, overrides), refused or redone when a later run differs."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.files import describe_change, differences_from_record, display_name, remove_own_stale_temp_files
from .report import JobReport
from .sharding import WHOLE_JOB, Shard

__all__ = ["Ledger", "OutputFolder", "claim_output", "model_fingerprint", "sort_existing"]


class Ledger:
    """The outputs a job has written into its output folder, one relative name a line (as a JSON string, so
    that any file name fits on one line) in ``.segfix-<job>.done``.

    A file found in the output folder counts as finished only when the ledger lists it: a user's own file of the
    same name is reported and left alone, never taken for a result nor overwritten. A name is recorded just
    before its file is renamed into place, so a kill in between only means the file is made again."""

    def __init__(self, outputs: OutputFolder, job: str, shard: Shard = WHOLE_JOB) -> None:
        self.path = outputs.path(Path(f".segfix-{job}{shard.ledger_suffix()}.done"))
        # Every process's ledger counts, so a re-run with another number of processes still skips finished work.
        self.names: set[str] = set()
        root = outputs.root
        for path in [root / f".segfix-{job}.done", *sorted(root.glob(f".segfix-{job}.shard*.done"))]:
            if path.is_file() and not path.is_symlink():
                lines = path.read_text(errors="surrogateescape").splitlines()
                self.names.update(_ledger_name(line) for line in lines)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def add(self, name: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(name) + "\n")
        self.names.add(name)


def claim_output(outputs: OutputFolder, job: str, made_by: dict[str, Any]) -> None:
    """Record what makes this job's outputs (``.segfix-source-<job>.json``: the model's config and a digest of its
    weights, or the offsets folder; the overrides and label settings), or refuse a folder that another job made:
    its finished files would otherwise count as done for anything asked of it.

    Raises:
        ValueError: the folder holds outputs made otherwise, naming what differs.
    """
    path = outputs.path(Path(f".segfix-source-{job}.json"))
    differ = differences_from_record(path, made_by)
    if differ:
        recorded, now = json.loads(path.read_text()), json.loads(json.dumps(made_by, default=str))
        details = "; ".join(describe_change(key, recorded.get(key), now.get(key)) for key in differ)
        raise ValueError(
            f"{outputs.root} holds outputs made with other {', '.join(differ)} ({details}; recorded in {path.name}); "
            "choose another output folder, or remove this one to redo it (nothing is overwritten)"
        )


def model_fingerprint(model) -> dict[str, Any]:
    """What makes a model's outputs: its config (network and settings) and a SHA-256 of its weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    config = model.config
    config["inference"] = {k: v for k, v in config["inference"].items() if k != "torch_compile"}  # same outputs
    return {"config": config, "weights_sha256": digest.hexdigest()}


def _ledger_name(line: str) -> str:
    """A ledger line -> the name it records (JSON strings; earlier versions wrote names bare)."""
    if line.startswith('"'):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            pass
    return line


class OutputFolder:
    """Where a job may write: only inside its output folder, at names derived from the inputs' relative paths,
    never through a link that leads out of it, and never into an input folder."""

    def __init__(self, output: Path, inputs: Iterable[Path | None]) -> None:
        self.root = Path(output)
        self.real = Path(os.path.realpath(self.root))
        self.inputs = [Path(os.path.realpath(p)) for p in inputs if p is not None]
        for folder in self.inputs:
            if self.real == folder or folder in self.real.parents:
                raise ValueError(
                    f"output folder {output} lies inside the input folder {folder}; choose another so that "
                    "no input is overwritten"
                )
            if self.real in folder.parents:
                raise ValueError(
                    f"input folder {folder} lies inside the output folder {output}; choose an output folder "
                    "outside every input"
                )

    def path(self, relative: Path) -> Path:
        """The output path of ``relative``, checked: a name that would leave the folder is refused."""
        relative = Path(relative)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"{display_name(str(relative))}: expected a relative name inside the output folder")
        target = self.root / relative
        real = Path(os.path.realpath(target))
        if self.real not in real.parents or any(real == i or i in real.parents for i in self.inputs):
            raise ValueError(
                f"{display_name(str(target))} leads to {display_name(str(real))} (through a link), outside the "
                "output folder; nothing is written there"
            )
        return target

    def clean(self, targets: Iterable[Path]) -> None:
        """Remove what killed segfix processes of this machine left beside these targets (never another
        running job's temporary files)."""
        for folder in {Path(t).parent for t in targets}:
            remove_own_stale_temp_files(folder)


def sort_existing(
    items: Sequence[Path], root: Path, target: Callable[[Path], Path], ledger: Ledger, report: JobReport
) -> list[Path]:
    """Items still to do; finished ones go to ``report.skipped``; outputs segfix did not write, unsafe output
    names and items that would write one output go to ``report.failed``."""
    targets: dict[Path, Path] = {}
    for item in items:
        try:
            targets[item] = target(item)
        except ValueError as error:
            report.failed.append((str(item.relative_to(root)), str(error)))
    claimed = Counter(targets.values())
    todo = []
    for item, out in targets.items():
        name = str(item.relative_to(root))
        if claimed[out] > 1:
            others = [display_name(str(i.relative_to(root))) for i, o in targets.items() if o == out]
            report.failed.append((name, f"{', '.join(others)} would all be written to {out}; rename all but one"))
        elif not out.exists() and not out.is_symlink():
            todo.append(item)
        elif name in ledger and out.is_file() and not out.is_symlink():
            report.skipped.append(name)
        else:
            reason = (
                f"{out} exists and was not written by segfix; move it or pick another output (nothing is overwritten)"
            )
            report.failed.append((name, reason))
    return todo
