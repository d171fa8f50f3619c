"""The queue trigger of the embedded host: submission messages become jobs, or dead letters.

A message is completed only once its job is stored; a crash before that leaves it locked, it is
delivered again when the lock expires, and its idempotency key (the message id unless the body
names one) turns the second delivery into the job already stored. A message that can never
become a job (not JSON, invalid job, missing workspace) is dead-lettered at once with the
reason; anything else (the store busy, a bug) is abandoned and retried until the queue's
delivery limit dead-letters it. The Functions app's Service Bus triggers call `handle` too.
"""

from __future__ import annotations

import json
import logging
import threading

from batchai.errors import ApiError
from batchai.ports import QueueMessage, SubmissionQueue
from batchai.submission import submit_message

log = logging.getLogger("batchai.queue")


def handle(svc, queue: SubmissionQueue, message: QueueMessage) -> str:
    """Settle one message; returns "completed", "dead-lettered" or "abandoned"."""
    try:
        body = json.loads(message.body)
    except ValueError as exc:
        queue.dead_letter(message, "MalformedMessage", f"the message body is not JSON: {exc}")
        return "dead-lettered"
    try:
        submit_message(svc, body, idempotency_key=(body.get("idempotencyKey") if isinstance(body, dict) else None) or message.id)
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

    def __init__(self, svc, queue: SubmissionQueue, *, idle_wait: float = 0.2, batch: int = 32):
        self.svc, self.queue, self.idle_wait, self.batch = svc, queue, idle_wait, batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="queue-consumer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self.queue.receive(max_messages=self.batch)
            except Exception:  # noqa: BLE001 - keep consuming
                log.exception("receiving from the submission queue failed")
                messages = []
            for message in messages:
                if self._stop.is_set():
                    break
                handle(self.svc, self.queue, message)
            if not messages:
                self._stop.wait(self.idle_wait)
