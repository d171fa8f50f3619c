"""Sweeps and job metrics, driven as users drive them: HTTP, the official SDK and the CLI, on a live control plane.

The trial (tests/fixtures/sweeps/trial.py) trains for 20 quick steps towards a loss whose minimum is known.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import SUB, TOKEN, Server, kill_agents
from tests.support.naming import unique_name
from tests.support.waiting import until

V = {"api-version": "2018-05-01"}
TRIAL = Path(__file__).resolve().parents[1] / "fixtures" / "sweeps" / "trial.py"
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(240)


def workspace(http, name: str, nodes: int) -> str:
    base = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/{name}"
    assert http.put(base, params=V, json={"location": "local"}).status_code == 200
    cluster = {"vmSize": "D1", "userAccountSettings": {"adminUserName": "u"}, "scaleSettings": {"manual": {"targetNodeCount": nodes}}}
    assert http.put(f"{base}/clusters/c", params=V, json={"properties": cluster}).status_code == 200
    assert http.put(f"{base}/experiments/e", params=V).status_code == 200
    return base


def trial_body(base: str, args: str = "") -> dict:
    return {
        "properties": {
            "cluster": {"id": f"{base}/clusters/c"},
            "nodeCount": 1,
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT",
            "customToolkitSettings": {"commandLine": f"{sys.executable} {TRIAL} --x {{x}} {args}"},
        }
    }


def sweep_body(base: str, **fields) -> dict:
    spec = {
        "search_space": {"x": {"type": "uniform", "min_value": -3, "max_value": 3}},
        "objective": {"goal": "minimize", "primary_metric": "loss"},
        "sampling_algorithm": {"type": "random", "seed": 7},
        "limits": {"max_total_trials": 4, "max_concurrent_trials": 2},
        "trial": trial_body(base),
    }
    return {"properties": {**spec, **fields}}


def wait_sweep(http, url: str, timeout: float = 180) -> dict:
    return until(
        lambda: (s := http.get(url, params=V).json())["properties"]["executionState"] != "running" and s,
        timeout,
        f"the sweep {url.rsplit('/', 1)[-1]} to end",
        interval=0.2,
    )


def max_overlap(jobs) -> int:
    """The most trials that held a node at once, from their start and end times."""
    edges = sorted(
        [(j.execution_info.start_time, 1) for j in jobs] + [(j.execution_info.end_time, -1) for j in jobs], key=lambda e: (e[0], e[1])
    )
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_metrics_are_relayed_while_the_job_runs_and_readable_over_http_and_the_cli(server, tmp_path):
    http = server.http()
    base = workspace(http, unique_name("metrics"), 1)
    release = tmp_path / "release"
    helper = f"{sys.executable} -m batchai.cli.main metric --step 4 loss=0.25 acc=0.9"
    command = (
        f"for i in 1 2 3; do echo '{{\"step\": '$i', \"loss\": 1.5}}' >> $AZ_BATCHAI_METRICS_FILE; done; echo not-json >> $AZ_BATCHAI_METRICS_FILE; "
        f"while [ ! -e {release} ]; do sleep 0.1; done; {helper}"
    )
    body = {"properties": {**trial_body(base)["properties"], "customToolkitSettings": {"commandLine": command}}}
    job = f"{base}/experiments/e/jobs/m"
    assert http.put(job, params=V, json=body).status_code == 200

    running = until(lambda: len((m := http.get(f"{job}/metrics", params=V).json())["value"]) == 3 and m, 60, "three metric lines")
    assert http.get(job, params=V).json()["properties"]["executionState"] == "running"
    assert running["value"] == [{"step": i, "loss": 1.5} for i in (1, 2, 3)] and running["metricsMalformed"] == 1
    release.touch()
    until(lambda: http.get(job, params=V).json()["properties"]["executionState"] == "succeeded", 60, "the job to succeed")
    assert http.get(f"{job}/metrics", params=V).json()["value"][-1] == {"step": 4, "loss": 0.25, "acc": 0.9}

    cli = cli_run(server, "--json", "job", "metrics", "m", "-w", base.rsplit("/", 1)[-1], "-e", "e")
    assert [e["step"] for e in json.loads(cli)["value"]] == [1, 2, 3, 4]


def cli_run(server, *args: str) -> str:
    env = {"BATCHAI_TOKEN": TOKEN, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "batchai.cli.main", "--url", server.url, "--resource-group", "rg", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_sweep_runs_its_trials_as_jobs_of_the_experiment_within_its_limits(server, sdk, tmp_path):
    http = server.http()
    ws = unique_name("sweep")
    base = workspace(http, ws, 3)
    url = f"{base}/experiments/e/sweeps/s"
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(
        "search_space:\n  x: {type: choice, values: [-1, 0.5, 1, 2.5]}\n"
        "objective: {goal: minimize, primary_metric: loss}\nsampling_algorithm: grid\n"
        "limits: {max_total_trials: 10, max_concurrent_trials: 2}\n"
        f"trial: {json.dumps(trial_body(base))}\n"
    )
    created = json.loads(cli_run(server, "--json", "sweep", "create", "s", "-w", ws, "-e", "e", "-f", str(sweep_file)))
    assert created["properties"]["limits"]["max_total_trials"] == 4  # a grid of 4 points

    done = wait_sweep(http, url)
    props = done["properties"]
    assert props["executionState"] == "succeeded"
    assert sorted(t["parameters"]["x"] for t in props["trials"]) == [-1, 0.5, 1, 2.5]
    assert {t["state"] for t in props["trials"]} == {"succeeded"}
    assert props["bestTrial"]["parameters"] == {"x": 1} and props["bestTrial"]["objective"] == pytest.approx(0.05)

    trials = [j for j in sdk.jobs.list_by_experiment("rg", ws, "e") if j.name.startswith("s-")]
    assert sorted(j.name for j in trials) == ["s-0", "s-1", "s-2", "s-3"]
    assert max_overlap(trials) <= 2  # three nodes, two at most: the sweep's limit, not the cluster's
    one = sdk.jobs.get("rg", ws, "e", trials[0].name)
    env = {v.name: v.value for v in one.environment_variables}
    assert env["AZ_BATCHAI_SWEEP_NAME"] == "s" and "AZ_BATCHAI_PARAM_X" in env
    assert f"--x {env['AZ_BATCHAI_PARAM_X']}" in one.custom_toolkit_settings.command_line
    assert http.get(f"{base}/experiments/e/jobs/{one.name}", params=V).json()["tags"]["sweep"] == "s"

    shown = cli_run(server, "sweep", "show", "s", "-w", ws, "-e", "e")
    assert "best trial: s-" in shown and "{'x': 1}" in shown
    rows = [line for line in shown.splitlines() if "│ s-" in line]
    assert rows and "1.05" not in rows[0] and "0.05" in rows[0]  # sorted by the objective, best first
    assert [s["name"] for s in http.get(f"{base}/experiments/e/sweeps", params=V).json()["value"]] == ["s"]


@pytest.mark.parametrize(
    "policy",
    [
        {"type": "median_stopping", "evaluation_interval": 1, "delay_evaluation": 5},
        {"type": "asha", "min_resource": 5, "reduction_factor": 2},
        {"type": "bandit", "slack_factor": 0.5, "evaluation_interval": 1, "delay_evaluation": 5},
    ],
    ids=lambda p: p["type"],
)
def test_early_termination_stops_the_planted_bad_trials_and_lets_the_good_ones_finish(server, policy):
    http = server.http()
    base = workspace(http, unique_name("early"), 3)
    url = f"{base}/experiments/e/sweeps/s"
    # x = 1, 1.2, 0.9: good, quick; x = 9, 10: a loss far worse, a step a second after step 6 (20 s to run out)
    space = {"x": {"type": "choice", "values": [1, 1.2, 0.9, 9, 10]}}
    trial = trial_body(base, "--slow-after 6 --slow-above 5")
    body = sweep_body(
        base,
        search_space=space,
        sampling_algorithm={"type": "grid", "seed": 1},
        early_termination=policy,
        limits={"max_total_trials": 5, "max_concurrent_trials": 3},
        trial=trial,
    )
    assert http.put(url, params=V, json=body).status_code == 200
    props = wait_sweep(http, url)["properties"]
    states = {t["parameters"]["x"]: (t["state"], t["lastStep"]) for t in props["trials"]}
    events = {
        t["name"]: http.get(f"{base}/experiments/e/jobs/{t['name']}", params=V).json()["properties"]["events"] for t in props["trials"]
    }
    expected = {1: "succeeded", 1.2: "succeeded", 0.9: "succeeded", 9: "early terminated", 10: "early terminated"}
    assert {x: s for x, (s, _) in states.items()} == expected, (states, events)
    assert all(states[x][1] == 20 for x in (1, 1.2, 0.9)) and all(states[x][1] < 20 for x in (9, 10))
    assert props["bestTrial"]["parameters"] == {"x": 1}
    bad = next(t["name"] for t in props["trials"] if t["parameters"]["x"] == 9)
    job = http.get(f"{base}/experiments/e/jobs/{bad}", params=V).json()["properties"]
    assert job["executionState"] == "failed" and job["executionInfo"]["errors"][0]["code"] == "JobEarlyTerminated"
    assert any(e["event"] == "terminate requested" and e["reason"] == "early_terminated" for e in job["events"])


def test_cancel_stops_every_trial(server):
    http = server.http()
    base = workspace(http, unique_name("cancel"), 2)
    url = f"{base}/experiments/e/sweeps/s"
    body = sweep_body(base, trial=trial_body(base, "--slow-after 0"), limits={"max_total_trials": 6, "max_concurrent_trials": 2})
    assert http.put(url, params=V, json=body).status_code == 200
    until(lambda: http.get(url, params=V).json()["properties"]["trialStateCounts"]["running"] == 2, 60, "two running trials")
    assert http.post(f"{url}/cancel", params=V).status_code == 200
    props = wait_sweep(http, url)["properties"]
    assert props["executionState"] == "canceled"
    assert {t["state"] for t in props["trials"]} == {"canceled"} and len(props["trials"]) == 2


def test_deleting_a_running_sweep_stops_and_deletes_its_trials(server):
    http = server.http()
    base = workspace(http, unique_name("delete"), 2)
    url = f"{base}/experiments/e/sweeps/s"
    body = sweep_body(base, trial=trial_body(base, "--slow-after 0"), limits={"max_total_trials": 6, "max_concurrent_trials": 2})
    assert http.put(url, params=V, json=body).status_code == 200
    until(lambda: http.get(url, params=V).json()["properties"]["trialStateCounts"]["running"] == 2, 60, "two running trials")
    trials = [t["name"] for t in http.get(url, params=V).json()["properties"]["trials"]]
    deleted = http.delete(url, params=V)
    assert deleted.status_code == 202
    until(lambda: http.get(deleted.headers["location"]).status_code == 204, 60, "the deletion to finish")
    assert http.get(url, params=V).status_code == 404
    assert all(http.get(f"{base}/experiments/e/jobs/{name}", params=V).status_code == 404 for name in trials)
    assert http.get(f"{base}/experiments/e/jobs", params=V).json()["value"] == []
    assert http.get(f"{base}/experiments/e/sweeps", params=V).json()["value"] == []


def test_a_sweep_past_its_timeout_stops_its_trials(server):
    http = server.http()
    base = workspace(http, unique_name("timeout"), 2)
    url = f"{base}/experiments/e/sweeps/s"
    limits = {"max_total_trials": 6, "max_concurrent_trials": 2, "timeout": 2}
    assert http.put(url, params=V, json=sweep_body(base, trial=trial_body(base, "--slow-after 0"), limits=limits)).status_code == 200
    props = wait_sweep(http, url)["properties"]
    assert props["endReason"] == "timeout" and props["executionState"] == "failed"  # no trial finished
    assert len(props["trials"]) == 2 and {t["state"] for t in props["trials"]} == {"canceled"}


BAD = [
    ({"search_space": {"x": {"type": "gaussian", "mu": 0}}}, "properties.search_space.x.type"),
    ({"search_space": {"x": {"type": "choice", "values": []}}}, "properties.search_space.x.values"),
    ({"limits": {"max_total_trials": 4, "max_concurrent_trials": 0}}, "properties.limits.max_concurrent_trials"),
    (
        {"sampling_algorithm": "bayesian", "search_space": {"x": {"type": "lognormal", "mu": 0, "sigma": 1}}},
        "properties.search_space.x.type",
    ),
    ({"limits": {"max_total_trials": 100_000}}, "properties.limits.max_total_trials"),
    ({"early_termination": {"type": "bandit"}}, "properties.early_termination.slack_factor"),
    ({"objective": {"goal": "minimize"}}, "properties.objective.primary_metric"),
    (
        {"trial": {"properties": {"nodeCount": 1, "stdOutErrPathPrefix": "/tmp", "customToolkitSettings": {"commandLine": "true"}}}},
        "properties.trial.properties.cluster",
    ),
    ({"trial": {"nodeCount": 1, "customToolkitSettings": {"commandLine": "true"}}}, "properties.trial.stdOutErrPathPrefix"),
]


@pytest.mark.parametrize("change,target", BAD, ids=[t for _, t in BAD])
def test_bad_input_is_a_400_naming_the_field_and_nothing_is_stored(server, change, target):
    http = server.http()
    base = workspace(http, unique_name("bad"), 1)
    answer = http.put(f"{base}/experiments/e/sweeps/s", params=V, json=sweep_body(base, **change))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["target"] == target, answer.json()
    assert http.get(f"{base}/experiments/e/sweeps/s", params=V).status_code == 404
    assert http.get(f"{base}/experiments/e/sweeps", params=V).json()["value"] == []
    assert http.get(f"{base}/experiments/e/jobs", params=V).json()["value"] == []


def test_kill9_during_a_sweep_of_20_trials_then_restart_makes_exactly_20_trials(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    marks = tmp_path / "marks"
    marks.mkdir()
    server = Server(data).start()
    try:
        http = server.http()
        base = workspace(http, unique_name("restart"), 3)
        url = f"{base}/experiments/e/sweeps/s"
        body = sweep_body(base, trial=trial_body(base, f"--marks {marks}"), limits={"max_total_trials": 20, "max_concurrent_trials": 3})
        assert http.put(url, params=V, json=body).status_code == 200
        until(lambda: len(list(marks.iterdir())) >= 5, 120, "five trials to start")

        server.kill9()
        server.start()
        http = server.http()

        props = wait_sweep(http, url)["properties"]
        assert props["executionState"] == "succeeded"
        names = sorted(t["name"] for t in props["trials"])
        assert names == sorted(f"s-{n}" for n in range(20))
        ends = {
            t["name"]: http.get(f"{base}/experiments/e/jobs/{t['name']}", params=V).json()["properties"].get("events")
            for t in props["trials"]
        }
        assert {t["state"] for t in props["trials"]} == {"succeeded"}, (props["trials"], ends)
        jobs = [j["name"] for j in http.get(f"{base}/experiments/e/jobs", params=V).json()["value"]]
        assert sorted(jobs) == names
        assert sorted(p.name for p in marks.iterdir()) == names
        assert all(len(p.read_text().split()) == 1 for p in marks.iterdir()), "a trial ran twice"
        expected = min((t for t in props["trials"]), key=lambda t: (t["parameters"]["x"] - 1) ** 2)
        assert props["bestTrial"]["name"] == expected["name"]
    finally:
        server.stop()
        kill_agents(data)


TWO_D = {"x": {"type": "uniform", "min_value": -3, "max_value": 3}, "y": {"type": "uniform", "min_value": -5, "max_value": 1}}
OPTIMUM, TOLERANCE = 0.05, 0.1  # as bench/sweep_samplers.py


@pytest.mark.slow
def test_bayesian_reaches_the_optimum_in_fewer_trials_than_random(server, sdk):
    """Acceptance: the same budget and seed, trials that train 20 steps towards a loss with a known minimum
    (0.05 at x = 1, y = -2); both sweeps run at once on four nodes, two trials each at most."""
    http = server.http()
    ws = unique_name("bayes")
    base = workspace(http, ws, 4)
    trial = trial_body(base, "--y {y}")
    budget = 40  # random sampling with seed 2 never gets within the tolerance in 40 trials (bench/sweep_samplers.py)
    for algorithm in ("bayesian", "random"):
        body = sweep_body(
            base,
            search_space=TWO_D,
            sampling_algorithm={"type": algorithm, "seed": 2},
            limits={"max_total_trials": budget, "max_concurrent_trials": 2},
            trial=trial,
        )
        assert http.put(f"{base}/experiments/e/sweeps/{algorithm}", params=V, json=body).status_code == 200
    first = {}
    for algorithm in ("bayesian", "random"):
        props = wait_sweep(http, f"{base}/experiments/e/sweeps/{algorithm}", timeout=600)["properties"]
        assert props["executionState"] == "succeeded" and len(props["trials"]) == budget
        curve, best = [], float("inf")
        for t in sorted(props["trials"], key=lambda t: t["number"]):
            best = min(best, t["objective"])
            curve.append(best)
        first[algorithm] = next((i + 1 for i, v in enumerate(curve) if v - OPTIMUM <= TOLERANCE), None)
        print(f"\n{algorithm}: first trial within {TOLERANCE} of the optimum: {first[algorithm]}; best loss after each trial:")
        print(" ".join(f"{v:.3f}" for v in curve))
        trials = [j for j in sdk.jobs.list_by_experiment("rg", ws, "e") if j.name.startswith(f"{algorithm}-")]
        assert len(trials) == budget and max_overlap(trials) <= 2
    assert first["bayesian"] is not None
    assert first["random"] is None or first["bayesian"] < first["random"]
