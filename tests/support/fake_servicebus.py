"""A Service Bus namespace in memory, faked at the SDK's boundaries (there is no emulator here).

Two fakes share one `Namespace`:
- `ManagementTransport`: an azure-core `HttpTransport` answering the ATOM XML of the management
  API, so a real `ServiceBusAdministrationClient` creates and reads topics, subscriptions and
  rules through its own serialisation;
- `FakeServiceBusClient`: stands where `ServiceBusClient` does (`get_topic_sender`,
  `get_subscription_receiver`). Senders take real `ServiceBusMessage`s, encode them with the
  SDK's AMQP encoder and route them by the subscriptions' SQL rules; receivers hand back real
  `ServiceBusReceivedMessage`s decoded from those bytes, with the broker's delivery count, lock
  token and sequence number, and settle them as the broker does (peek-lock, MaxDeliveryCount,
  DeadLetterReason / DeadLetterErrorDescription properties).
Each `ServiceBusMessage` sent and each settlement call is recorded for the tests.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from azure.core.pipeline.transport import HttpResponse, HttpTransport
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus._pyamqp._decode import decode_payload
from azure.servicebus._pyamqp._encode import encode_payload
from azure.servicebus._pyamqp.message import Header, Message
from azure.servicebus._transport._pyamqp_transport import PyamqpTransport
from azure.servicebus.exceptions import MessageLockLostError

ATOM = "http://www.w3.org/2005/Atom"
SB = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
COUNTS = "http://schemas.microsoft.com/netservices/2011/06/servicebus"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
CONNECTION = "Endpoint=sb://127.0.0.1/;SharedAccessKeyName=test;SharedAccessKey=c2VjcmV0"


@dataclass
class Stored:
    seq: int
    amqp: Message  # as the SDK encoded it, decoded again
    deliveries: int = 0  # completed delivery attempts so far (the AMQP header's delivery-count)
    lock: uuid.UUID | None = None
    locked_until: float = 0.0
    holder: object | None = None  # the receiver holding the lock
    dead: dict = field(default_factory=dict)  # DeadLetterReason / DeadLetterErrorDescription once dead


@dataclass
class Subscription:
    active: list[Stored] = field(default_factory=list)
    dead: list[Stored] = field(default_factory=list)


class Namespace:
    """The broker state: management entities (ATOM entries by path) and each subscription's messages."""

    def __init__(self, lock_seconds: float = 30.0):
        self.entities: dict[str, ET.Element] = {}
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        self.seen_ids: dict[str, set[str]] = {}
        self.sent: list[ServiceBusMessage] = []
        self.settlements: list[tuple[str, str, dict]] = []  # (operation, message id, keyword arguments)
        self.lock_seconds = lock_seconds
        self._seq = 0
        self.mutex = threading.RLock()

    # management -----------------------------------------------------------------------------

    def description(self, path: str) -> ET.Element | None:
        entry = self.entities.get(path)
        return None if entry is None else entry.find(f"{{{ATOM}}}content")[0]

    def setting(self, path: str, name: str) -> str | None:
        description = self.description(path)
        found = None if description is None else description.find(f"{{{SB}}}{name}")
        return None if found is None else found.text

    def rules(self, topic: str, subscription: str) -> dict[str, str | None]:
        """Rule name -> SQL expression (None for a TrueFilter)."""
        prefix = f"{topic}/subscriptions/{subscription}/rules/"
        out = {}
        for path in self.entities:
            if path.startswith(prefix):
                sql = self.description(path).find(f"{{{SB}}}Filter/{{{SB}}}SqlExpression")
                out[path[len(prefix) :]] = None if sql is None else sql.text
        return out

    def put(self, path: str, body: bytes) -> ET.Element:
        entry = ET.fromstring(body)
        title = ET.SubElement(entry, f"{{{ATOM}}}title")
        title.text = path.rsplit("/", 1)[-1]
        self.entities[path] = entry
        parts = path.split("/")
        if len(parts) == 3 and parts[1] == "subscriptions":
            self.subscriptions.setdefault((parts[0], parts[2]), Subscription())
            self.put(f"{path}/rules/$Default", _DEFAULT_RULE)  # as the service does
        return entry

    def delete(self, path: str) -> bool:
        return self.entities.pop(path, None) is not None

    def active_count(self, topic: str, subscription: str) -> int:
        return len(self.subscriptions[(topic, subscription)].active)

    # messaging --------------------------------------------------------------------------------

    def send(self, topic: str, message: ServiceBusMessage) -> None:
        with self.mutex:
            self.sent.append(message)
            amqp = decode_payload(
                memoryview(bytes(encode_payload(bytearray(), PyamqpTransport.to_outgoing_amqp_message(message.raw_amqp_message))))
            )
            message_id = str(message.message_id)
            if self.setting(topic, "RequiresDuplicateDetection") == "true":
                if message_id in self.seen_ids.setdefault(topic, set()):
                    return
                self.seen_ids[topic].add(message_id)
            for (t, name), subscription in self.subscriptions.items():
                if t == topic and any(_matches(sql, amqp.application_properties or {}) for sql in self.rules(t, name).values()):
                    self._seq += 1
                    subscription.active.append(Stored(seq=self._seq, amqp=amqp))

    def expire_locks(self) -> None:
        with self.mutex:
            for subscription in self.subscriptions.values():
                for stored in subscription.active:
                    stored.locked_until = 0.0


def _matches(sql: str | None, properties: dict) -> bool:
    if sql is None:
        return True
    name, value = re.fullmatch(r"\s*(\w+)\s*=\s*'([^']*)'\s*", sql).groups()
    return properties.get(name.encode()) == value.encode()


_DEFAULT_RULE = (
    f'<entry xmlns="{ATOM}"><content type="application/xml"><RuleDescription xmlns="{SB}" xmlns:i="{XSI}">'
    '<Filter i:type="TrueFilter"><SqlExpression>1=1</SqlExpression></Filter>'
    '<Action i:type="EmptyRuleAction"/><Name>$Default</Name></RuleDescription></content></entry>'
).encode()


class _Response(HttpResponse):
    def __init__(self, request, status: int, body: bytes):
        super().__init__(request, None)
        self.status_code, self._body = status, body
        self.reason = {200: "OK", 201: "Created", 404: "Not Found"}.get(status, "")
        self.content_type = "application/atom+xml;type=entry;charset=utf-8"
        self.headers = {"Content-Type": self.content_type}

    def body(self) -> bytes:
        return self._body


class ManagementTransport(HttpTransport):
    """The management API over a Namespace: GET, PUT and DELETE of topics, subscriptions and rules."""

    def __init__(self, namespace: Namespace):
        self.namespace = namespace
        self.requests: list[tuple[str, str]] = []

    def __enter__(self):
        return self

    def __exit__(self, *args) -> None:
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, request, **kwargs) -> HttpResponse:
        path = unquote(urlparse(request.url).path.strip("/"))
        self.requests.append((request.method, path))
        with self.namespace.mutex:
            if request.method == "PUT":
                return _Response(request, 201, ET.tostring(self.namespace.put(path, request.body)))
            if request.method == "DELETE":
                return _Response(request, 200 if self.namespace.delete(path) else 404, b"")
            if path.endswith("/rules"):
                return _Response(request, 200, self._feed(path))
            if path not in self.namespace.entities:
                return _Response(request, 404, b"<Error><Code>404</Code><Detail>The messaging entity could not be found.</Detail></Error>")
            return _Response(request, 200, ET.tostring(self._entry(path)))

    def _feed(self, path: str) -> bytes:
        feed = ET.Element(f"{{{ATOM}}}feed")
        ET.SubElement(feed, f"{{{ATOM}}}title").text = "Rules"
        feed.extend(entry for p, entry in self.namespace.entities.items() if p.startswith(path + "/"))
        return ET.tostring(feed)

    def _entry(self, path: str) -> ET.Element:
        """The stored entry; a subscription's gets its live message counts, as the service adds them."""
        entry = self.namespace.entities[path]
        parts = path.split("/")
        if len(parts) != 3:
            return entry
        subscription = self.namespace.subscriptions[(parts[0], parts[2])]
        entry = ET.fromstring(ET.tostring(entry))
        counts = ET.SubElement(entry.find(f"{{{ATOM}}}content")[0], f"{{{SB}}}CountDetails")
        ET.SubElement(counts, f"{{{COUNTS}}}ActiveMessageCount").text = str(len(subscription.active))
        ET.SubElement(counts, f"{{{COUNTS}}}DeadLetterMessageCount").text = str(len(subscription.dead))
        return entry


class FakeSender:
    def __init__(self, namespace: Namespace, topic: str):
        self.namespace, self.topic = namespace, topic
        self.closed = False

    def send_messages(self, message: ServiceBusMessage | list[ServiceBusMessage]) -> None:
        for one in message if isinstance(message, list) else [message]:
            self.namespace.send(self.topic, one)

    def close(self) -> None:
        self.closed = True


class FakeReceiver:
    """A peek-lock receiver on one subscription (or its dead-letter sub-queue, for peeking)."""

    def __init__(self, namespace: Namespace, topic: str, subscription: str, sub_queue: ServiceBusSubQueue | None):
        self.namespace, self.sub_queue = namespace, sub_queue
        self.subscription = namespace.subscriptions[(topic, subscription)]
        self.max_delivery_count = int(namespace.setting(f"{topic}/subscriptions/{subscription}", "MaxDeliveryCount") or 10)
        self.closed = False

    def __enter__(self) -> FakeReceiver:
        return self

    def __exit__(self, *args) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True

    def receive_messages(self, max_message_count: int = 1, max_wait_time: float | None = None) -> list[ServiceBusReceivedMessage]:
        assert self.sub_queue is None
        if max_wait_time is not None and max_wait_time <= 0:  # as the SDK checks
            raise ValueError("The max_wait_time must be greater than 0.")
        if max_message_count <= 0:
            raise ValueError("The max_message_count must be greater than 0")
        now, out = time.time(), []
        with self.namespace.mutex:
            self._expire(now)
            for stored in [s for s in self.subscription.active if s.locked_until <= now][:max_message_count]:
                stored.lock, stored.locked_until, stored.holder = uuid.uuid4(), now + self.namespace.lock_seconds, self
                out.append(self._received(stored, stored.lock.bytes_le))
        return out

    def _expire(self, now: float) -> None:
        """A lock that ran out counts as a delivery; past MaxDeliveryCount the broker dead-letters."""
        for stored in list(self.subscription.active):
            if stored.lock is not None and stored.locked_until <= now:
                self._unlock(stored)

    def _unlock(self, stored: Stored) -> None:
        stored.lock, stored.locked_until, stored.holder = None, 0.0, None
        stored.deliveries += 1
        if stored.deliveries >= self.max_delivery_count:
            self._dead(stored, "MaxDeliveryCountExceeded", f"Message could not be consumed after {stored.deliveries} delivery attempts.")

    def _dead(self, stored: Stored, reason: str | None, description: str | None) -> None:
        self.subscription.active.remove(stored)
        stored.dead = {"DeadLetterReason": reason, "DeadLetterErrorDescription": description}
        self.subscription.dead.append(stored)

    def _received(self, stored: Stored, tag: bytes | None) -> ServiceBusReceivedMessage:
        properties = dict(stored.amqp.application_properties or {})
        properties.update({k.encode(): v.encode() for k, v in stored.dead.items() if v is not None})
        amqp = stored.amqp._replace(
            header=Header(delivery_count=stored.deliveries),
            message_annotations={b"x-opt-sequence-number": stored.seq},
            application_properties=properties,
        )
        return ServiceBusReceivedMessage(amqp, receiver=self, frame=(None, stored.seq, tag) if tag else None, is_peeked_message=tag is None)

    def _held(self, operation: str, message: ServiceBusReceivedMessage, **kwargs) -> Stored:
        self.namespace.settlements.append((operation, str(message.message_id), kwargs))
        self._expire(time.time())
        for stored in self.subscription.active:
            if stored.lock is not None and stored.lock == message.lock_token and stored.holder is self:
                return stored
        raise MessageLockLostError(message="The lock supplied is invalid: it expired, or the message was settled")

    def complete_message(self, message: ServiceBusReceivedMessage) -> None:
        with self.namespace.mutex:
            self.subscription.active.remove(self._held("complete", message))

    def abandon_message(self, message: ServiceBusReceivedMessage) -> None:
        with self.namespace.mutex:
            self._unlock(self._held("abandon", message))

    def dead_letter_message(
        self, message: ServiceBusReceivedMessage, reason: str | None = None, error_description: str | None = None
    ) -> None:
        with self.namespace.mutex:
            stored = self._held("dead_letter", message, reason=reason, error_description=error_description)
            self._dead(stored, reason, error_description)

    def peek_messages(self, max_message_count: int = 1, *, sequence_number: int = 0) -> list[ServiceBusReceivedMessage]:
        messages = self.subscription.dead if self.sub_queue == ServiceBusSubQueue.DEAD_LETTER else self.subscription.active
        with self.namespace.mutex:
            return [self._received(s, None) for s in messages if s.seq >= sequence_number][:max_message_count]


class FakeServiceBusClient:
    """Stands where `ServiceBusClient` does: hands out senders and receivers over a Namespace."""

    def __init__(self, namespace: Namespace):
        self.namespace = namespace
        self.receivers: list[FakeReceiver] = []
        self.closed = False

    def get_topic_sender(self, topic_name: str) -> FakeSender:
        return FakeSender(self.namespace, topic_name)

    def get_subscription_receiver(
        self, topic_name: str, subscription_name: str, *, sub_queue: ServiceBusSubQueue | None = None
    ) -> FakeReceiver:
        receiver = FakeReceiver(self.namespace, topic_name, subscription_name, sub_queue)
        self.receivers.append(receiver)
        return receiver

    def close(self) -> None:
        self.closed = True
