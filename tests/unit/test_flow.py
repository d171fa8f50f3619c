"""The Flow port behaves the same on both engines: activities, retries, failures, any, all, restart."""

from __future__ import annotations

import itertools
import logging
from datetime import timedelta

import pytest

from batchai.flow import FlowTaskFailed, Retry
from tests.support.engines import ENGINES, run_on

pytestmark = pytest.mark.timeout(60)


def double(x):
    return x * 2


def chain(flow, x):
    a = yield flow.activity("double", x)
    b = yield flow.activity("double", a)
    return b


def fan_out(flow, n):
    values = yield flow.all([flow.activity("double", i) for i in range(1, n + 1)])
    return values


def flaky_call(flow, _):
    value = yield flow.activity("flaky", None, retry=Retry(first_interval=timedelta(milliseconds=50), max_attempts=3))
    return value


def caught(flow, _):
    try:
        yield flow.activity("boom", None, retry=Retry(first_interval=timedelta(milliseconds=50), max_attempts=2))
    except FlowTaskFailed as exc:
        return f"caught: {exc}"
    return "not raised"


def uncaught(flow, _):
    yield flow.activity("boom", None)
    return "unreachable"


def event_or_timer(flow, seconds):
    index, value = yield flow.any([flow.event("go"), flow.timer(timedelta(seconds=seconds))])
    return [index, value]


def countdown(flow, n):
    yield flow.activity("double", n)
    if n > 0:
        flow.restart(n - 1)
        return None
    return "liftoff"


@pytest.fixture
def flaky():
    calls = itertools.count(1)

    def fn(_):
        attempt = next(calls)
        if attempt < 3:
            raise RuntimeError(f"transient failure {attempt}")
        return f"ok after {attempt}"

    return fn


def boom(_):
    raise ValueError("nope")


@pytest.mark.parametrize("engine", ENGINES)
def test_activities_in_sequence(engine):
    assert run_on(engine, chain, {"double": double}, 3).output == 12


@pytest.mark.parametrize("engine", ENGINES)
def test_all_gathers_results_in_order(engine):
    assert run_on(engine, fan_out, {"double": double}, 3).output == [2, 4, 6]


@pytest.mark.parametrize("engine", ENGINES)
def test_declared_retries_are_done_by_the_engine(engine, flaky):
    assert run_on(engine, flaky_call, {"flaky": flaky}, None).output == "ok after 3"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failure_after_retries_is_a_flow_task_failed_naming_the_error(engine):
    out = run_on(engine, caught, {"boom": boom}, None).output
    assert out.startswith("caught: ") and "nope" in out


@pytest.mark.parametrize("engine", ENGINES)
def test_an_uncaught_failure_fails_the_orchestration(engine):
    outcome = run_on(engine, uncaught, {"boom": boom}, None)
    assert outcome.output is None and "nope" in outcome.error


@pytest.mark.parametrize("engine", ENGINES)
def test_any_returns_the_event_when_it_comes_first(engine):
    assert run_on(engine, event_or_timer, {}, 3600, events=[("go", {"x": 1})]).output == [0, {"x": 1}]


@pytest.mark.parametrize("engine", ENGINES)
def test_any_returns_the_timer_when_nothing_comes(engine):
    assert run_on(engine, event_or_timer, {}, 0.2).output == [1, None]


@pytest.mark.parametrize("engine", ENGINES)
def test_restart_continues_as_new(engine):
    assert run_on(engine, countdown, {"double": double}, 3).output == "liftoff"


def test_the_worker_log_drops_timers_abandoned_by_a_won_wait_and_keeps_other_warnings(caplog):
    from batchai.adapters.durabletask_engine import _quiet_logger

    logger = _quiet_logger("durabletask.worker")
    assert _quiet_logger("durabletask.worker").filters == logger.filters and len(logger.filters) == 1  # added once
    with caplog.at_level(logging.WARNING, logger="durabletask.worker"):
        logger.warning("job-1: Ignoring unexpected timerFired event with ID = 12.")
        logger.warning("job-1: Ignoring unexpected taskCompleted event with ID = 3.")
    assert [r.getMessage() for r in caplog.records] == ["job-1: Ignoring unexpected taskCompleted event with ID = 3."]
