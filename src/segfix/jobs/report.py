"""What a folder job did: the files done, skipped and failed (:class:`JobReport`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field

__all__ = ["JobReport"]


@dataclass
class JobReport:
    """What a folder job did: names written, skipped (already done) and failed (with the reason)."""

    done: list[str] = dataclass_field(default_factory=list)
    skipped: list[str] = dataclass_field(default_factory=list)
    failed: list[tuple[str, str]] = dataclass_field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        return f"{len(self.done)} written, {len(self.skipped)} already done, {len(self.failed)} failed"

    @classmethod
    def combine(cls, reports: Sequence[JobReport]) -> JobReport:
        """One report of several processes' (a sharded job's)."""
        return cls(
            done=[n for r in reports for n in r.done],
            skipped=[n for r in reports for n in r.skipped],
            failed=[f for r in reports for f in r.failed],
        )
