"""The Service Bus SubmissionQueue: a topic with one subscription per priority.

Service Bus has no message priority, so a publisher tags each message with a `priority`
application property and three subscriptions (`high`, `normal`, `low`) each keep the messages
whose property matches their SQL filter; receive drains `high` before `normal` before `low`.
The rest is the broker's, with the SQLite adapter's semantics: peek-lock (the lock duration is
the subscription's, so `lock_seconds` is not per call), delivery counts, dead-letter sub-queues
with a reason, and duplicate detection on the message id (the idempotency key), which makes
publishing the same submission twice harmless.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiver,
    ServiceBusSender,
    ServiceBusSubQueue,
)
from azure.servicebus.amqp import AmqpMessageBodyType
from azure.servicebus.management import ServiceBusAdministrationClient, SqlRuleFilter

from batchai.ports import PRIORITIES, QueueMessage

DEFAULT_TOPIC = "submissions"
PRIORITY_PROPERTY = "priority"
RULE_NAME = "priority"
MAX_DELIVERY_COUNT = 5
LOCK_DURATION = timedelta(seconds=30)
DUPLICATE_WINDOW = timedelta(minutes=10)  # a republish within this window is dropped by the topic


def subscription_filter(priority: str) -> str:
    """The SQL filter of a priority's subscription."""
    return f"{PRIORITY_PROPERTY} = '{priority}'"


@dataclass(kw_only=True)
class ServiceBusQueueMessage(QueueMessage):
    """A received message with the SDK message and the receiver holding its lock: only that receiver can settle it."""

    received: ServiceBusReceivedMessage = field(repr=False, compare=False)
    receiver: ServiceBusReceiver = field(repr=False, compare=False)


class ServiceBusSubmissionQueue:
    """SubmissionQueue over one topic; settle messages from the same thread that received them (the SDK's
    receivers are not thread-safe)."""

    def __init__(
        self,
        client: ServiceBusClient,
        admin: ServiceBusAdministrationClient,
        topic: str = DEFAULT_TOPIC,
        *,
        max_delivery_count: int = MAX_DELIVERY_COUNT,
        max_wait_time: float = 0.5,
    ):
        self.client, self.admin, self.topic = client, admin, topic
        self.max_delivery_count, self.max_wait_time = max_delivery_count, max_wait_time
        self._sender: ServiceBusSender | None = None
        self._send_lock = threading.Lock()
        self._receivers: dict[str, ServiceBusReceiver] = {}

    @classmethod
    def from_connection_string(cls, connection: str, topic: str = DEFAULT_TOPIC, **options: Any) -> ServiceBusSubmissionQueue:
        return cls(
            ServiceBusClient.from_connection_string(connection),
            ServiceBusAdministrationClient.from_connection_string(connection),
            topic,
            **options,
        )

    @classmethod
    def from_namespace(cls, namespace: str, credential: Any, topic: str = DEFAULT_TOPIC, **options: Any) -> ServiceBusSubmissionQueue:
        """With a token credential (a managed identity: Azure Service Bus Data Sender and Receiver), no key."""
        return cls(ServiceBusClient(namespace, credential), ServiceBusAdministrationClient(namespace, credential), topic, **options)

    def publish(self, body: str, *, priority: str = "normal", message_id: str | None = None) -> str:
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}")
        message_id = message_id or uuid.uuid4().hex
        message = ServiceBusMessage(body, message_id=message_id, application_properties={PRIORITY_PROPERTY: priority})
        with self._send_lock:
            if self._sender is None:
                self._sender = self.client.get_topic_sender(self.topic)
            self._sender.send_messages(message)
        return message_id

    def receive(self, *, max_messages: int = 10, lock_seconds: float = 30.0) -> list[QueueMessage]:
        out: list[QueueMessage] = []
        for priority in PRIORITIES:
            if len(out) >= max_messages:
                break
            receiver = self._receiver(priority)
            for received in receiver.receive_messages(max_message_count=max_messages - len(out), max_wait_time=self.max_wait_time):
                message = _queue_message(priority, receiver, received)
                if message.delivery_count > self.max_delivery_count:
                    receiver.dead_letter_message(
                        received,
                        reason="MaxDeliveryCountExceeded",
                        error_description=f"not completed after {message.delivery_count - 1} deliveries",
                    )
                else:
                    out.append(message)
        return out

    def _receiver(self, priority: str) -> ServiceBusReceiver:
        if priority not in self._receivers:
            self._receivers[priority] = self.client.get_subscription_receiver(self.topic, priority)
        return self._receivers[priority]

    def complete(self, message: QueueMessage) -> None:
        held = _held(message)
        held.receiver.complete_message(held.received)

    def abandon(self, message: QueueMessage) -> None:
        held = _held(message)
        held.receiver.abandon_message(held.received)

    def dead_letter(self, message: QueueMessage, reason: str, description: str) -> None:
        held = _held(message)
        held.receiver.dead_letter_message(held.received, reason=reason, error_description=description)

    def depth(self) -> dict[str, int]:
        return {p: self.admin.get_subscription_runtime_properties(self.topic, p).active_message_count or 0 for p in PRIORITIES}

    def dead_letters(self) -> list[dict]:
        out: list[dict] = []
        for priority in PRIORITIES:
            with self.client.get_subscription_receiver(self.topic, priority, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
                out += [
                    {
                        "id": m.message_id,
                        "priority": priority,
                        "reason": m.dead_letter_reason,
                        "description": m.dead_letter_error_description,
                        "body": _text(m),
                    }
                    for m in _peek_all(receiver)
                ]
        return out

    def close(self) -> None:
        for handler in [self._sender, *self._receivers.values()]:
            if handler is not None:
                handler.close()
        self._sender, self._receivers = None, {}
        self.client.close()
        self.admin.close()


def _queue_message(priority: str, receiver: ServiceBusReceiver, received: ServiceBusReceivedMessage) -> ServiceBusQueueMessage:
    # the SDK reports the AMQP header's count of earlier deliveries (0 the first time); the port counts from 1
    return ServiceBusQueueMessage(
        id=str(received.message_id),
        body=_text(received),
        priority=priority,
        delivery_count=(received.delivery_count or 0) + 1,
        lock_token=str(received.lock_token),
        received=received,
        receiver=receiver,
    )


def _held(message: QueueMessage) -> ServiceBusQueueMessage:
    if not isinstance(message, ServiceBusQueueMessage):
        raise TypeError(f"message {message.id} was not received from a Service Bus queue: it cannot be settled there")
    return message


def _text(message: ServiceBusReceivedMessage) -> str:
    """The body as text; bytes that are not UTF-8 are kept visible (replaced) so the consumer reports them malformed."""
    body = message.body
    if message.body_type == AmqpMessageBodyType.DATA:
        body = b"".join(body)
    return body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body)


def _peek_all(receiver: ServiceBusReceiver, page: int = 100) -> Iterator[ServiceBusReceivedMessage]:
    sequence = 0
    while batch := receiver.peek_messages(max_message_count=page, sequence_number=sequence):
        yield from batch
        sequence = (batch[-1].sequence_number or 0) + 1


def ensure_topology(
    admin: ServiceBusAdministrationClient,
    topic: str = DEFAULT_TOPIC,
    *,
    max_delivery_count: int = MAX_DELIVERY_COUNT,
    lock_duration: timedelta = LOCK_DURATION,
) -> None:
    """Create what is missing: the topic with duplicate detection, and per priority a subscription whose only rule
    is its SQL filter. Existing subscriptions keep their settings; the adapter enforces its delivery limit anyway."""
    _ensure_topic(admin, topic)
    for priority in PRIORITIES:
        try:
            admin.get_subscription(topic, priority)
        except ResourceNotFoundError:
            admin.create_subscription(topic, priority, max_delivery_count=max_delivery_count, lock_duration=lock_duration)
        _ensure_rule(admin, topic, priority)


def _ensure_topic(admin: ServiceBusAdministrationClient, topic: str) -> None:
    try:
        existing = admin.get_topic(topic)
    except ResourceNotFoundError:
        admin.create_topic(topic, requires_duplicate_detection=True, duplicate_detection_history_time_window=DUPLICATE_WINDOW)
        return
    if not existing.requires_duplicate_detection:
        raise RuntimeError(
            f"the topic '{topic}' has no duplicate detection (it cannot be turned on later): "
            "a republished submission would be queued twice; delete it or use another topic"
        )


def _ensure_rule(admin: ServiceBusAdministrationClient, topic: str, priority: str) -> None:
    """The priority rule first, then drop the others (the `$Default` rule lets every message in): the subscription
    is never without a rule, when a published message would match no subscription and be lost."""
    rules = {rule.name: rule for rule in admin.list_rules(topic, priority)}
    ours = rules.pop(RULE_NAME, None)
    wanted = subscription_filter(priority)
    if ours is None:
        admin.create_rule(topic, priority, RULE_NAME, filter=SqlRuleFilter(wanted))
    elif getattr(ours.filter, "sql_expression", None) != wanted:
        ours.filter = SqlRuleFilter(wanted)
        admin.update_rule(topic, priority, ours)
    for name in rules:
        admin.delete_rule(topic, priority, name)
