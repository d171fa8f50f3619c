"""Metric lines from a task's file to its job: the agent's tail of the file, and the job's record of them."""

from __future__ import annotations

from batchai.agent.agent import MetricsTail
from batchai.metrics import MAX_PER_JOB, _add
from batchai.ports import Record


def test_the_tail_sends_whole_lines_once_even_when_two_reports_overlap(tmp_path):
    path = tmp_path / "jobs" / "u" / "metrics.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("left by an earlier attempt\n")
    tail = MetricsTail(str(path))
    assert path.read_text() == "" and tail.report("t", 10_000) is None
    with open(path, "a") as f:
        f.write('{"step": 1}\n{"step": 2}\n{"st')
    first = tail.report("t", 10_000)
    assert first == {"taskId": "t", "from": 0, "lines": ['{"step": 1}', '{"step": 2}']}
    with open(path, "a") as f:
        f.write('ep": 3}\n')
    second = tail.report("t", 10_000)  # sent before the first's answer came back: from the same line
    assert second == {"taskId": "t", "from": 0, "lines": ['{"step": 1}', '{"step": 2}', '{"step": 3}']}
    tail.delivered(second)
    tail.delivered(first)
    assert tail.pending == [] and tail.sent == 3 and tail.report("t", 10_000) is None


def test_a_report_keeps_within_its_byte_budget(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(str(path))
    path.write_text("".join(f'{{"step": {i}}}\n' for i in range(100)))
    report = tail.report("t", 200)
    assert 0 < len(report["lines"]) < 100 and sum(len(x) + 8 for x in report["lines"]) <= 200


def job() -> Record:
    return Record(id="j", type="jobs", name="j", parent="e", body={"properties": {}})


def test_the_job_keeps_each_line_once_in_order_and_counts_what_it_drops():
    record = job()
    assert _add(record, "t", 0, ['{"loss": 1}', "not json"]) is record
    assert _add(record, "t", 0, ['{"loss": 1}', "not json"]) is None  # a report sent again
    assert _add(record, "t", 5, ['{"loss": 9}']) is None  # a gap: lines 2-4 never arrived
    _add(record, "t", 1, ["not json", '{"loss": 2}'])
    assert record.internal["metrics"] == [{"loss": 1}, {"loss": 2}]
    assert record.internal["metricsMalformed"] == 1 and record.internal["metricLines"] == {"t": 3}
    _add(record, "t", 3, ['{"x": 0}'] * MAX_PER_JOB)
    assert len(record.internal["metrics"]) == MAX_PER_JOB and record.internal["metricsDropped"] == 2
