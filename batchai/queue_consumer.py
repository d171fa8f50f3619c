"""The queue trigger of the embedded host: submission messages become jobs, or dead letters.

A message is completed only once its job is stored; a crash before that leaves it locked, it is
delivered again when the lock expires, and its idempotency key (the message id unless the body
names one) turns the second delivery into the job already stored. A message that can never
become a job (not JSON, invalid job, missing workspace) is dead-lettered at once with the
reason; anything else (the store busy, a bug) is abandoned and retried until the queue's
delivery limit dead-letters it. The Functions app's Service Bus triggers call `handle` too, with
`HostSettlement`: there the Functions host holds the lock and settles the message.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

from batchai.background import Repeating
from batchai.errors import ApiError
from batchai.ports import QueueMessage, SubmissionQueue
from batchai.services import Services
from batchai.submission import submit_message

log = logging.getLogger("batchai.queue")


class Settlement(Protocol):
    """What `handle` needs: how to settle one message (a SubmissionQueue, or HostSettlement)."""

    def complete(self, message: QueueMessage) -> None: ...
    def abandon(self, message: QueueMessage) -> None: ...
    def dead_letter(self, message: QueueMessage, reason: str, description: str) -> None: ...


class Redeliver(Exception):
    """Raised out of a Functions trigger so that the host abandons the message and delivers it again."""


class HostSettlement:
    """Settlement where the Functions host holds the lock: it completes the message when the function returns,
    abandons it when the function raises, and dead-letters it after the subscription's MaxDeliveryCount.

    The Python Service Bus trigger cannot dead-letter by itself (message settlement from Python is a preview
    binding extension), so a message that can never become a job is logged with its reason and abandoned:
    the broker dead-letters it when its deliveries run out (reason MaxDeliveryCountExceeded), and it stays
    there for `batchai queue show` rather than being lost.
    """

    def complete(self, message: QueueMessage) -> None:
        """The host completes it when the function returns."""

    def abandon(self, message: QueueMessage) -> None:
        raise Redeliver(f"submission message {message.id} will be delivered again")

    def dead_letter(self, message: QueueMessage, reason: str, description: str) -> None:
        log.error(
            "submission message %s can never become a job: %s: %s (the subscription dead-letters it after its last delivery)",
            message.id,
            reason,
            description,
        )
        raise Redeliver(f"submission message {message.id} is rejected: {reason}")


def handle(svc: Services, queue: Settlement, message: QueueMessage) -> str:
    """Settle one message; returns "completed", "dead-lettered" or "abandoned"."""
    try:
        body = json.loads(message.body)
    except ValueError as exc:
        queue.dead_letter(message, "MalformedMessage", f"the message body is not JSON: {exc}")
        return "dead-lettered"
    try:
        submit_message(
            svc, body, via="queue", idempotency_key=(body.get("idempotencyKey") if isinstance(body, dict) else None) or message.id
        )
    except ApiError as exc:
        description = exc.message + (f" (target: {exc.target})" if exc.target else "")
        queue.dead_letter(message, exc.code, description)
        return "dead-lettered"
    except Exception:  # noqa: BLE001 - transient or unknown: let the queue deliver it again
        log.exception("submission message %s failed; it will be delivered again", message.id)
        queue.abandon(message)
        return "abandoned"
    queue.complete(message)
    return "completed"


class QueueConsumer:
    """Receives and handles messages in a thread until stopped; waits briefly when the queue is empty."""

    def __init__(self, svc: Services, queue: SubmissionQueue, *, idle_wait: float = 0.2, batch: int = 32):
        self.svc, self.queue, self.batch = svc, queue, batch
        self._loop = Repeating("queue-consumer", self.consume, idle_wait, log)
        self.start, self.stop = self._loop.start, self._loop.stop

    def consume(self) -> int:
        """Handle one batch of messages; returns how many were received. Stopping mid-batch gives the rest
        back at once rather than leaving them locked (each wait would also cost them a delivery)."""
        messages = self.queue.receive(max_messages=self.batch)
        for position, message in enumerate(messages):
            if self._loop.stopping:
                self._give_back(messages[position:])
                break
            self._handle(message)
        return len(messages)

    def _give_back(self, messages: list[QueueMessage]) -> None:
        for message in messages:
            try:
                self.queue.abandon(message)
            except Exception:  # noqa: BLE001 - its lock runs out instead
                log.warning("giving back submission message %s failed; it returns when its lock expires", message.id)

    def _handle(self, message: QueueMessage) -> None:
        """A settlement that fails (the lock expired meanwhile) must not stop the consumer: the message comes
        back, and its idempotency key makes the second delivery the job already stored."""
        try:
            handle(self.svc, self.queue, message)
        except Exception:  # noqa: BLE001 - keep consuming
            log.exception("settling submission message %s failed", message.id)
