"""A sweep's steps taken again after a crash, in process on a paused cluster (trials stay queued):
a trial recorded whose job was never submitted gets it, and a retried step makes no trial twice."""

from __future__ import annotations

import pytest

from batchai import sweep_runs, sweeps
from batchai.wake import wake_sweep
from tests.support.naming import unique_name
from tests.support.paused_host import V, job_names, paused_host, workspace_path
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(120)


def test_a_recorded_trial_gets_its_job_and_a_retried_step_makes_none_twice(tmp_path):
    ws = unique_name("recover")
    with paused_host(tmp_path, ws, "e") as host:
        base = workspace_path(ws)
        url = f"{base}/experiments/e/sweeps/s"
        body = {
            "properties": {
                "search_space": {"x": {"type": "uniform", "min_value": 0, "max_value": 1}},
                "objective": {"goal": "minimize", "primary_metric": "loss"},
                "sampling_algorithm": {"type": "random", "seed": 5},
                "limits": {"max_total_trials": 5, "max_concurrent_trials": 2},
                "trial": {
                    "cluster": {"id": f"{base}/clusters/c"},
                    "nodeCount": 1,
                    "stdOutErrPathPrefix": "/tmp",
                    "customToolkitSettings": {"commandLine": "true"},
                },
            }
        }
        assert host.http.put(url, params=V, json=body).status_code == 200
        until(lambda: job_names(host, ws, "e") == ["s-0", "s-1"], 30, "the first two trials")
        svc = host.services
        record = svc.store.get(url)

        # The control plane stopped between recording trial 2 and submitting its job:
        views = sweep_runs.trials(svc, record)
        answer = sweeps.ask(sweep_runs.spec_of(record), views, record.internal["studyAttrs"])
        trial = {
            "number": 2,
            "raw": answer["raw"],
            "sys": answer["sys"],
            "params": sweeps.parameters(sweep_runs.spec_of(record), answer["raw"]),
        }

        def append(r):
            r.internal["trials"].append(trial)
            return r

        svc.store.mutate(record.id, append)
        wake_sweep(svc, record.internal["uuid"])
        until(lambda: job_names(host, ws, "e") == ["s-0", "s-1", "s-2"], 60, "the recorded trial's job")
        job = host.http.get(f"{base}/experiments/e/jobs/s-2", params=V).json()
        assert {v["name"]: v["value"] for v in job["properties"]["environmentVariables"]}["AZ_BATCHAI_PARAM_X"] == str(trial["params"]["x"])

        # A step retried after it had done its work (the engine lost its answer) does it no second time:
        ref = sweep_runs.ref(record)
        assert sweep_runs.start(svc, {**ref, "first": 0, "count": 2}) == 0
        assert sweep_runs.observe(svc, ref)["made"] == 3
        assert job_names(host, ws, "e") == ["s-0", "s-1", "s-2"]
        assert len(svc.store.get(url).internal["trials"]) == 3
