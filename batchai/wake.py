"""Waking a job's lifecycle, and a cluster's controller (debounced through the store).

A job's lifecycle only looks at its job when woken or when its timer runs out (ten minutes while
queued), so whoever changes a job wakes it: the pass that starts it, the API that terminates it,
the node that reports its task, the deletion that removes it.

Every queued job, freed node, joined node and scale request asks the controller for a pass.
A burst of them (a sweep of thousands of submissions) must not become thousands of passes, each
reading the whole queue: the first request raises a flag and sends the event; later ones see
the flag up and send nothing, since the pass that event starts will see their changes too. The
pass lowers the flag as it begins. A lost event cannot silence the cluster: the controller's own
timer runs a pass (and lowers the flag) within its maximum wait anyway.
"""

from __future__ import annotations

from batchai.lifecycle import controller_instance, job_instance
from batchai.ports import Record


def wake_job(svc, job: Record) -> None:
    svc.engine.raise_event(job_instance(job), "wake")


def wake_flag(cluster: Record) -> str:
    return f"wake:{cluster.internal['uuid']}"


def wake_cluster(svc, cluster: Record | None) -> None:
    if cluster is not None and svc.store.set_flag(wake_flag(cluster)):
        svc.engine.raise_event(controller_instance(cluster), "wake")
