"""A job's report: ok only without failures; a sharded job's reports combine in order."""

from __future__ import annotations

from segfix.jobs import JobReport


def test_reports_combine_and_summarise():
    a = JobReport(done=["a.png"], skipped=["b.png"])
    b = JobReport(done=["c.png"], failed=[("d.png", "not a PNG")])
    both = JobReport.combine([a, b])
    assert a.ok and not b.ok and not both.ok
    assert both.done == ["a.png", "c.png"] and both.skipped == ["b.png"] and both.failed == [("d.png", "not a PNG")]
    assert both.summary() == "2 written, 1 already done, 1 failed"
