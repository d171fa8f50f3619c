"""Activities: every side effect of the control plane, one small function each.

Each activity is `fn(services, input) -> JSON-able`. Composition roots bind them to a
`Services` container with `bind(services)` and register the result with their engine, so the
same functions run under the embedded durabletask worker and under Azure Functions.
"""

from __future__ import annotations

from collections.abc import Callable

from activities import clusters, jobs, resources, sweeps

ACTIVITIES: dict[str, Callable] = {
    "observe_job": jobs.observe_job,
    "kill_job": jobs.kill_job,
    "complete_job": jobs.complete_job,
    "requeue_job": jobs.requeue_job,
    "control_cluster": clusters.control_cluster,
    "record_pass_failure": clusters.record_pass_failure,
    "delete_resource": resources.delete_resource,
    "provision_file_server": resources.provision_file_server,
    "observe_sweep": sweeps.observe_sweep,
    "stop_trials": sweeps.stop_trials,
    "start_trials": sweeps.start_trials,
    "finish_sweep": sweeps.finish_sweep,
}


def bind(services) -> dict[str, Callable]:
    def named(name: str, fn: Callable) -> Callable:
        def bound(inp):
            return fn(services, inp)

        bound.__name__ = name
        return bound

    return {name: named(name, fn) for name, fn in ACTIVITIES.items()}
