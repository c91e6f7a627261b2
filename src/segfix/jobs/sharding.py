"""Splitting a folder job across processes: ``torchrun``, several nodes, or a Slurm array.

Each process takes a deterministic, disjoint slice of the sorted inputs (every ``count``-th file from
``index``), so every output is written exactly once, and a job killed part-way resumes where it stopped: the
files each process finished are listed in that process's ledger, and every ledger is read on the next run,
whatever the number of processes then.

>>> Shard(1, 3).take(["a", "b", "c", "d", "e"])
['b', 'e']
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..limits import is_int

__all__ = ["Shard"]

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Process ``index`` of ``count`` (0-based): it handles items ``index, index + count, ...``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        for name in ("index", "count"):
            value = getattr(self, name)
            if not is_int(value):
                raise TypeError(f"Shard.{name}: expected an integer, got {value!r}")
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard: expected 0 <= index < count, got index {self.index} of count {self.count}")

    @property
    def is_split(self) -> bool:
        return self.count > 1

    def take(self, items: Sequence[T]) -> list[T]:
        """This shard's items, in their given order (sort them first: every process must see the same list)."""
        return list(items[self.index :: self.count])

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``'K/N'``: shard K of N, 0-based (``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise ValueError(f"shard: expected K/N with 0 <= K < N, e.g. 0/4, got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Shard:
        """The shard ``torchrun`` (or any launcher that sets ``RANK`` and ``WORLD_SIZE``) gives this process;
        a single shard when they are not set."""
        environ = os.environ if environ is None else environ
        if "WORLD_SIZE" not in environ:
            return cls()
        try:
            return cls(int(environ.get("RANK", "0")), int(environ["WORLD_SIZE"]))
        except ValueError as error:
            raise ValueError(
                f"RANK={environ.get('RANK')!r}, WORLD_SIZE={environ.get('WORLD_SIZE')!r}: expected the integers "
                f"torchrun sets ({error})"
            ) from None

    def ledger_suffix(self) -> str:
        """Part of the ledger file name: one ledger per process, so that no two processes append to one file."""
        return f".shard{self.index}-of-{self.count}" if self.is_split else ""


WHOLE_JOB = Shard()
"""The default: one process does every item."""


def gather_on_first(value: Any, shard: Shard) -> list[Any] | None:
    """Under a torchrun launch of ``shard.count`` processes: every process's ``value``, in rank order, on rank 0
    (None on the others). Starts (and ends) a gloo process group where none is running; outside a launch
    (no ``MASTER_ADDR``, or one shard) the value alone."""
    if not (shard.is_split and "MASTER_ADDR" in os.environ):
        return [value]
    import torch.distributed as dist

    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo")
    try:
        values: list | None = [None] * shard.count if shard.index == 0 else None
        dist.gather_object(value, values, dst=0)
    finally:
        if started:
            dist.destroy_process_group()
    return values
