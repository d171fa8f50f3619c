"""Scheduling policy: pure functions over queued jobs and nodes."""

from batchai.scheduling.placement import DEFAULT_MAX_SECONDS, QueuedJob, head_limits, place, queue_order, reservation

__all__ = ["DEFAULT_MAX_SECONDS", "QueuedJob", "head_limits", "place", "queue_order", "reservation"]
