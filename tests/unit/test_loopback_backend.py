"""The embedded engine's in-memory backend, where ours differs from durabletask's own."""

from __future__ import annotations

from batchai.adapters.durabletask_engine import LoopbackBackend


def test_events_for_an_orchestration_queued_already_wake_the_work_item_streams():
    """A stream that finds an orchestration in flight puts it back in the queue and sleeps until its next look
    (0.1 s). When the orchestration completes with events that came meanwhile (a controller's wake), it is
    queued already: the streams must be told all the same, or the wake waits out that look."""
    backend = LoopbackBackend()
    backend._orchestration_queue_set.add("controller")  # put back by the stream that found it in flight
    backend._work_available.clear()  # that stream sleeps
    backend._enqueue_orchestration("controller")  # the completion, with the wake that came while it ran
    assert backend._work_available.is_set()
    assert list(backend._orchestration_queue).count("controller") <= 1  # told, not queued twice
