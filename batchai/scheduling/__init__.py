"""Scheduling policy: pure functions over queued jobs and nodes."""

from batchai.scheduling.placement import DEFAULT_MAX_SECONDS, GpuShares, QueuedJob, head_limits, place, plan, queue_order, reservation

__all__ = ["DEFAULT_MAX_SECONDS", "GpuShares", "QueuedJob", "head_limits", "place", "plan", "queue_order", "reservation"]
