"""Scheduling policy: pure functions over queued jobs and nodes."""

from batchai.scheduling.placement import QueuedJob, place, queue_order

__all__ = ["QueuedJob", "place", "queue_order"]
