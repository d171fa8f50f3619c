"""Sweeps without a control plane: the specification's checks, the distributions as Azure ML defines them,
the sampler rebuilt from records, the early-termination policies, and the orchestration on both engines."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

from batchai import sweeps
from batchai.errors import ApiError
from batchai.model.sweep import check_sweep
from orchestrations.sweep import sweep
from tests.support.engines import ENGINES, run_on

pytestmark = pytest.mark.timeout(120)


def spec(**fields) -> dict:
    body = {
        "search_space": {"x": {"type": "uniform", "min_value": 0, "max_value": 1}},
        "objective": {"goal": "minimize", "primary_metric": "loss"},
        "trial": {"nodeCount": 1},
        **fields,
    }
    return check_sweep(body)


def made(s: dict, count: int, state: str = sweeps.SUCCEEDED) -> list[dict]:
    """`count` trials asked one after another, each recorded as the store would."""
    trials: list[dict] = []
    attrs: dict = {}
    for n in range(count):
        answer = sweeps.ask(s, trials, attrs)
        attrs = answer["studyAttrs"]
        trials.append({"number": n, "raw": answer["raw"], "sys": answer["sys"], "state": state, "values": {1: 1.0}, "objective": 1.0})
    return trials


def test_the_issues_example_is_accepted():
    s = spec(
        search_space={"lr": {"type": "loguniform", "min_value": -9, "max_value": -1}, "layers": {"type": "choice", "values": [1, 2, 3]}},
        sampling_algorithm="bayesian",
        early_termination={"type": "median_stopping", "evaluation_interval": 1, "delay_evaluation": 5},
        limits={"max_total_trials": 20, "max_concurrent_trials": 4, "timeout": 7200, "trial_timeout": 600},
    )
    params = sweeps.parameters(s, made(s, 1)[0]["raw"])
    assert math.exp(-9) <= params["lr"] <= math.exp(-1) and params["layers"] in (1, 2, 3)


def test_the_example_sweep_file_is_valid():
    import yaml

    from batchai.sweep_runs import trial_job

    text = (Path(__file__).resolve().parents[2] / "examples" / "sweep" / "sweep.yaml").read_text()
    s = check_sweep(yaml.safe_load(text.replace("<CLUSTER_ID>", "/c").replace("<REPO>", "/repo")))
    job = trial_job(s, "s", 0, {"lr": 0.001, "layers": 2}).properties.to_wire()
    assert job["customToolkitSettings"]["commandLine"].endswith("train.py --lr 0.001 --layers 2")
    assert job["constraints"]["maxWallClockTime"] == "PT10M"


def test_the_defaults_and_azure_mls_shorthands():
    s = spec(sampling_algorithm="sobol")
    assert s["sampling_algorithm"] == {"type": "sobol", "seed": 0}
    assert s["limits"] == {"max_total_trials": 1, "max_concurrent_trials": 1, "max_failed_trials": 1}
    assert s["early_termination"] is None


@pytest.mark.parametrize(
    "dist,raw,expected",
    [
        ({"type": "loguniform", "min_value": -9, "max_value": -1}, math.exp(-5), math.exp(-5)),
        ({"type": "qloguniform", "min_value": 0, "max_value": 5, "q": 10}, 44.0, 40),
        ({"type": "quniform", "min_value": 0, "max_value": 5, "q": 0.5}, 1.3, 1.5),
        ({"type": "randint", "upper": 5}, 4, 4),
        ({"type": "normal", "mu": 10, "sigma": 2}, 0.5, 10),
        ({"type": "qnormal", "mu": 10, "sigma": 2, "q": 3}, 0.5, 9),
        ({"type": "lognormal", "mu": 0, "sigma": 1}, 0.5, 1.0),
    ],
    ids=lambda v: v["type"] if isinstance(v, dict) else None,
)
def test_distributions_as_azure_ml_defines_them(dist, raw, expected):
    assert sweeps.value(dist, raw) == pytest.approx(expected)


def test_loguniform_bounds_are_exponents_of_e():
    d = sweeps.distribution({"type": "loguniform", "min_value": -9, "max_value": -1})
    assert (d.low, d.high, d.log) == (pytest.approx(math.exp(-9)), pytest.approx(math.exp(-1)), True)
    assert sweeps.distribution({"type": "randint", "upper": 5}).high == 4  # [0, upper)


@pytest.mark.parametrize(
    "fields,target",
    [
        ({"search_space": {"x": {"type": "beta"}}}, "properties.search_space.x.type"),
        ({"search_space": {"x": {"type": "uniform", "min_value": 2, "max_value": 1}}}, "properties.search_space.x.max_value"),
        ({"search_space": {f"p{i}": {"type": "randint", "upper": 2} for i in range(40)}}, "properties.search_space"),
        ({"sampling_algorithm": "grid"}, "properties.search_space.x.type"),  # grid: choice only
        (
            {"sampling_algorithm": "bayesian", "search_space": {"x": {"type": "normal", "mu": 0, "sigma": 1}}},
            "properties.search_space.x.type",
        ),
        ({"sampling_algorithm": "annealing"}, "properties.sampling_algorithm"),
        (
            {"sampling_algorithm": "grid", "search_space": {f"p{i}": {"type": "choice", "values": list(range(10))} for i in range(6)}},
            "properties.search_space",
        ),
        (
            {"early_termination": {"type": "truncation_selection", "truncation_percentage": 100}},
            "properties.early_termination.truncation_percentage",
        ),
        ({"limits": {"max_total_trials": 2, "max_failed_trials": 3}}, "properties.limits.max_failed_trials"),
        ({"objective": {"goal": "lowest", "primary_metric": "loss"}}, "properties.objective.goal"),
    ],
)
def test_bad_specifications_name_their_field(fields, target):
    with pytest.raises(ApiError) as raised:
        spec(**fields)
    assert raised.value.status == 400 and raised.value.target == target


@pytest.mark.parametrize("algorithm", ["random", "sobol", "bayesian"])
def test_asking_again_from_the_same_records_gives_the_same_trial(algorithm):
    """What makes a restart safe: the sampler is a function of the stored trials (and seed), nothing else."""
    s = spec(sampling_algorithm={"type": algorithm, "seed": 3}, limits={"max_total_trials": 12})
    trials = made(s, 7)
    again = made(s, 7)
    assert [t["raw"] for t in trials] == [t["raw"] for t in again]
    assert len({t["raw"]["x"] for t in trials}) == 7
    other = made(spec(sampling_algorithm={"type": algorithm, "seed": 4}), 7)
    assert not {t["raw"]["x"] for t in trials} & {t["raw"]["x"] for t in other}  # neighbouring seeds share no trial


def test_a_grid_visits_each_point_once():
    s = spec(
        sampling_algorithm="grid", search_space={"a": {"type": "choice", "values": [1, 2]}, "b": {"type": "choice", "values": ["u", "v"]}}
    )
    assert s["limits"]["max_total_trials"] == 1
    points = {tuple(sorted(t["raw"].items())) for t in made(s, 4, state=sweeps.RUNNING)}
    assert len(points) == 4


def trial(number: int, values: dict[int, float], state: str = sweeps.RUNNING) -> dict:
    return {
        "number": number,
        "raw": {"x": 0.5},
        "sys": {},
        "state": state,
        "values": values,
        "objective": values[max(values)] if values else None,
    }


def curve(level: float, steps: int) -> dict[int, float]:
    return {s: level + 1.0 / s for s in range(1, steps + 1)}


GOOD = [trial(0, curve(1.0, 20), sweeps.SUCCEEDED), trial(1, curve(1.1, 20), sweeps.SUCCEEDED), trial(2, curve(0.9, 20), sweeps.SUCCEEDED)]


@pytest.mark.parametrize(
    "policy",
    [
        {"type": "median_stopping", "delay_evaluation": 5},
        {"type": "asha", "min_resource": 5, "reduction_factor": 2},
        {"type": "bandit", "slack_factor": 0.5, "delay_evaluation": 5},
        {"type": "bandit", "slack_amount": 2, "delay_evaluation": 5},
        {"type": "truncation_selection", "truncation_percentage": 20, "delay_evaluation": 5},
    ],
    ids=lambda p: "-".join(str(v) for v in p.values()),
)
def test_each_policy_stops_a_clearly_worse_running_trial_and_spares_a_good_one(policy):
    s = spec(early_termination=policy)
    bad, good = trial(3, curve(9.0, 8)), trial(4, curve(0.95, 8))
    assert sweeps.to_stop(s, [*GOOD, bad, good]) == [3]


def test_no_policy_evaluates_before_its_delay():
    s = spec(early_termination={"type": "bandit", "slack_amount": 0.1, "delay_evaluation": 10})
    assert sweeps.to_stop(s, [*GOOD, trial(3, curve(9.0, 8))]) == []


def test_a_maximised_metric_is_compared_the_other_way():
    s = spec(objective={"goal": "maximize", "primary_metric": "acc"}, early_termination={"type": "bandit", "slack_factor": 0.1})
    done = [trial(n, {10: v}, sweeps.SUCCEEDED) for n, v in enumerate([0.9, 0.8])]
    assert sweeps.to_stop(s, [*done, trial(2, {10: 0.5}), trial(3, {10: 0.85})]) == [2]
    assert sweeps.best(s, done)["number"] == 0


def test_metric_series_take_the_step_or_count_reports():
    entries = [{"step": 3, "loss": 1.0}, {"acc": 0.5}, {"loss": 0.5}, {"step": 7, "loss": "x"}, {"step": 9, "loss": 0.25}]
    assert sweeps.series(entries, "loss") == {3: 1.0, 2: 0.5, 9: 0.25}
    assert sweeps.objective(sweeps.series(entries, "loss")) == 0.25


# -- the orchestration, on both engines, with scripted activities standing in for the store ----------------


class Script:
    """Plays a sweep of `budget` trials, `concurrency` at once, each ending after it was observed running once."""

    def __init__(self, budget: int, concurrency: int, stop_first: bool = False):
        self.budget, self.concurrency = budget, concurrency
        self.made = 0
        self.ages: dict[int, int] = {}  # running trial -> passes seen
        self.most_at_once = 0
        self.stopped: list[int] = []
        self.stop_first = stop_first
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def observe(self, inp):
        with self._lock:
            self.calls.append("observe_sweep")
            for n in list(self.ages):
                self.ages[n] += 1
                if self.ages[n] > 1:
                    del self.ages[n]
            stop = [0] if self.stop_first and 0 in self.ages and 0 not in self.stopped else []
            return {
                "state": "running",
                "made": self.made,
                "active": len(self.ages),
                "stop": stop,
                "reason": None,
                "budget": self.budget,
                "concurrency": self.concurrency,
                "wait": 0.01,
            }

    def start(self, inp):
        with self._lock:
            self.calls.append("start_trials")
            assert inp["first"] == self.made
            for n in range(inp["first"], inp["first"] + inp["count"]):
                self.ages[n] = 0
            self.made += inp["count"]
            self.most_at_once = max(self.most_at_once, len(self.ages))
            return inp["count"]

    def stop(self, inp):
        with self._lock:
            self.calls.append("stop_trials")
            self.stopped += inp["trials"]
            return len(inp["trials"])

    def finish(self, inp):
        with self._lock:
            self.calls.append("finish_sweep")
            return {"state": "succeeded", "best": 0, "reason": inp["reason"]}

    def activities(self):
        return {"observe_sweep": self.observe, "start_trials": self.start, "stop_trials": self.stop, "finish_sweep": self.finish}


@pytest.mark.parametrize("engine", ENGINES)
def test_the_sweep_makes_its_budget_of_trials_never_more_at_once_than_allowed(engine):
    script = Script(budget=7, concurrency=3, stop_first=True)
    outcome = run_on(engine, sweep, script.activities(), {"sweepId": "S", "uuid": "u"})
    assert outcome.error is None and outcome.output == {"state": "succeeded", "best": 0, "reason": None}
    assert script.made == 7 and script.most_at_once == 3
    assert script.stopped == [0] and script.calls[-1] == "finish_sweep"


@pytest.mark.parametrize("engine", ENGINES)
def test_an_ending_sweep_stops_its_trials_and_makes_no_more(engine):
    views = iter(
        [
            {"state": "running", "made": 2, "active": 2, "stop": [0, 1], "reason": "canceled", "budget": 5, "concurrency": 2, "wait": 0.01},
            {"state": "running", "made": 2, "active": 0, "stop": [], "reason": "canceled", "budget": 5, "concurrency": 2, "wait": 0.01},
        ]
    )
    calls = []
    activities = {
        "observe_sweep": lambda inp: next(views),
        "stop_trials": lambda inp: calls.append(("stop", inp["trials"], inp["reason"])) or 2,
        "start_trials": lambda inp: calls.append("start") or 0,
        "finish_sweep": lambda inp: calls.append(("finish", inp["reason"])) or {"state": "canceled"},
    }
    outcome = run_on(engine, sweep, activities, {"sweepId": "S", "uuid": "u"})
    assert outcome.output == {"state": "canceled"}
    assert calls == [("stop", [0, 1], "canceled"), ("finish", "canceled")]
