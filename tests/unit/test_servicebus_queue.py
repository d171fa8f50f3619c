"""The Service Bus SubmissionQueue, over the SDK's own message types and management client.

There is no Service Bus emulator here, so the namespace is faked at the SDK's boundaries
(tests/support/fake_servicebus.py): the real `ServiceBusAdministrationClient` talks ATOM XML to
an azure-core transport, and a stand-in `ServiceBusClient` takes real `ServiceBusMessage`s and
hands back real `ServiceBusReceivedMessage`s. The end-to-end cases run the real consumer and
create-job path of an embedded control plane over it, as test_submission_channels does for SQLite.
"""

from __future__ import annotations

import json

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus.exceptions import MessageLockLostError
from azure.servicebus.management import ServiceBusAdministrationClient

from batchai.adapters.servicebus_queue import ServiceBusQueueMessage, ServiceBusSubmissionQueue, ensure_topology
from batchai.ports import QueueMessage
from batchai.queue_consumer import QueueConsumer, handle
from batchai.submission import submit_message
from tests.support.fake_servicebus import CONNECTION, FakeServiceBusClient, ManagementTransport, Namespace
from tests.support.paused_host import job_names, paused_host
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(120)
TOPIC = "submissions"
EXP = "sbexp"


@pytest.fixture
def namespace() -> Namespace:
    return Namespace()


@pytest.fixture
def transport(namespace) -> ManagementTransport:
    return ManagementTransport(namespace)


@pytest.fixture
def admin(transport) -> ServiceBusAdministrationClient:
    return ServiceBusAdministrationClient.from_connection_string(CONNECTION, transport=transport)


@pytest.fixture
def queue(namespace, admin) -> ServiceBusSubmissionQueue:
    ensure_topology(admin, TOPIC)
    return ServiceBusSubmissionQueue(FakeServiceBusClient(namespace), admin, TOPIC, max_wait_time=0.01)


def test_the_topology_is_a_deduplicating_topic_and_one_filtered_subscription_per_priority(namespace, transport, admin):
    ensure_topology(admin, TOPIC)
    assert namespace.setting(TOPIC, "RequiresDuplicateDetection") == "true"
    assert namespace.setting(TOPIC, "DuplicateDetectionHistoryTimeWindow") == "PT10M"
    for priority in ("high", "normal", "low"):
        path = f"{TOPIC}/subscriptions/{priority}"
        assert namespace.setting(path, "MaxDeliveryCount") == "5" and namespace.setting(path, "LockDuration") == "PT30S"
        assert namespace.rules(TOPIC, priority) == {"priority": f"priority = '{priority}'"}  # $Default is gone
    transport.requests.clear()
    ensure_topology(admin, TOPIC)
    assert {method for method, _ in transport.requests} == {"GET"}  # nothing left to create


def test_a_wrong_rule_is_corrected_and_a_topic_without_duplicate_detection_refused(namespace, admin):
    ensure_topology(admin, TOPIC)
    rule = admin.get_rule(TOPIC, "low", "priority")
    rule.filter.sql_expression = "priority = 'high'"
    admin.update_rule(TOPIC, "low", rule)
    ensure_topology(admin, TOPIC)
    assert namespace.rules(TOPIC, "low") == {"priority": "priority = 'low'"}
    admin.create_topic("plain")
    with pytest.raises(RuntimeError, match="no duplicate detection"):
        ensure_topology(admin, "plain")


def test_publish_tags_the_priority_and_uses_the_idempotency_key_as_message_id(namespace, queue):
    assert queue.publish("{}", priority="low", message_id="key-1") == "key-1"
    generated = queue.publish("{}")
    sent = namespace.sent
    assert all(isinstance(m, ServiceBusMessage) for m in sent)
    assert [(m.message_id, m.application_properties) for m in sent] == [("key-1", {"priority": "low"}), (generated, {"priority": "normal"})]
    queue.publish("{}", priority="low", message_id="key-1")  # the topic drops the duplicate
    assert queue.depth() == {"high": 0, "normal": 1, "low": 1}
    with pytest.raises(ValueError, match="priority"):
        queue.publish("{}", priority="urgent")


def test_receive_drains_high_then_normal_then_low_with_sdk_messages_attached(queue):
    for i, priority in enumerate(["low", "normal", "high", "low", "high"]):
        queue.publish(json.dumps({"n": i}), priority=priority, message_id=f"m{i}")
    first = queue.receive(max_messages=3)
    assert [(m.id, m.priority) for m in first] == [("m2", "high"), ("m4", "high"), ("m1", "normal")]
    message = first[0]
    assert isinstance(message, ServiceBusQueueMessage) and isinstance(message.received, ServiceBusReceivedMessage)
    assert message.body == '{"n": 2}' and message.delivery_count == 1
    assert message.lock_token == str(message.received.lock_token) and message.received._receiver is message.receiver
    assert [m.id for m in queue.receive(max_messages=10)] == ["m0", "m3"]  # the locked ones are not delivered twice


def test_complete_abandon_and_dead_letter_settle_through_the_receiver_that_holds_the_lock(namespace, queue):
    for key in ("done", "again", "bad"):
        queue.publish(f'"{key}"', message_id=key)
    done, again, bad = queue.receive()
    queue.complete(done)
    queue.abandon(again)
    queue.dead_letter(bad, "MalformedMessage", "the message body is not JSON")
    assert namespace.settlements == [
        ("complete", "done", {}),
        ("abandon", "again", {}),
        ("dead_letter", "bad", {"reason": "MalformedMessage", "error_description": "the message body is not JSON"}),
    ]
    (redelivered,) = queue.receive()
    assert redelivered.id == "again" and redelivered.delivery_count == 2
    assert queue.depth() == {"high": 0, "normal": 1, "low": 0}
    assert queue.dead_letters() == [
        {"id": "bad", "priority": "normal", "reason": "MalformedMessage", "description": "the message body is not JSON", "body": '"bad"'}
    ]


def test_a_settlement_after_the_lock_expired_fails_and_the_message_comes_back(namespace, queue):
    queue.publish("{}", message_id="slow")
    (first,) = queue.receive()
    namespace.expire_locks()
    with pytest.raises(MessageLockLostError):
        queue.complete(first)
    (again,) = queue.receive()
    assert again.id == "slow" and again.delivery_count == 2


def test_the_broker_dead_letters_after_max_delivery_count(queue):
    queue.publish("{}", priority="high", message_id="poison")
    for _ in range(5):
        (message,) = queue.receive()
        queue.abandon(message)
    assert queue.receive() == []
    assert [(d["id"], d["reason"]) for d in queue.dead_letters()] == [("poison", "MaxDeliveryCountExceeded")]


def test_the_adapter_enforces_its_own_delivery_limit_on_a_laxer_subscription(namespace, admin):
    ensure_topology(admin, TOPIC, max_delivery_count=10)
    queue = ServiceBusSubmissionQueue(FakeServiceBusClient(namespace), admin, TOPIC, max_delivery_count=2, max_wait_time=0.01)
    queue.publish("{}", message_id="poison")
    for _ in range(2):
        (message,) = queue.receive()
        queue.abandon(message)
    assert queue.receive() == []
    (dead,) = queue.dead_letters()
    assert dead["reason"] == "MaxDeliveryCountExceeded" and "after 2 deliveries" in dead["description"]
    assert namespace.settlements[-1] == (
        "dead_letter",
        "poison",
        {"reason": "MaxDeliveryCountExceeded", "error_description": "not completed after 2 deliveries"},
    )


def test_a_message_from_another_queue_cannot_be_settled_here(queue):
    with pytest.raises(TypeError, match="not received from a Service Bus queue"):
        queue.complete(QueueMessage(id="x", body="{}", priority="normal", delivery_count=1))


def test_close_closes_the_sender_the_receivers_and_the_client(queue):
    queue.publish("{}")
    queue.receive()
    sender, receivers, client = queue._sender, list(queue._receivers.values()), queue.client
    queue.close()
    assert sender.closed and all(r.closed for r in receivers) and client.closed


def test_from_connection_string_builds_the_sdk_clients_without_connecting():
    queue = ServiceBusSubmissionQueue.from_connection_string(CONNECTION, TOPIC, max_wait_time=1.0)
    assert isinstance(queue.client, ServiceBusClient) and isinstance(queue.admin, ServiceBusAdministrationClient)
    assert queue.client.fully_qualified_namespace == "127.0.0.1" and queue.max_wait_time == 1.0
    queue.close()


# end to end: the real consumer and create-job path over the Service Bus adapter -------------------


@pytest.fixture
def host(tmp_path, unique_name):
    with paused_host(tmp_path, unique_name("sb"), EXP) as h:
        yield h


@pytest.fixture
def consumer(host, queue):
    consumer = QueueConsumer(host.services, queue, idle_wait=0.05)
    yield consumer
    consumer.stop()


def job_message(workspace: str, name: str) -> str:
    return json.dumps(
        {
            "workspace": workspace,
            "experiment": EXP,
            "jobName": name,
            "cluster": "c",
            "job": {
                "properties": {
                    "nodeCount": 1,
                    "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
                    "customToolkitSettings": {"commandLine": "true"},
                }
            },
        }
    )


def jobs(host) -> list[str]:
    return job_names(host, host.workspace, EXP)


def test_30_messages_become_30_jobs_high_before_normal_before_low(host, queue, consumer):
    priorities = ["low", "normal", "high"] * 10
    for i, priority in enumerate(priorities):
        queue.publish(job_message(host.workspace, f"m{i:02d}"), priority=priority)
    consumer.start()
    names = until(lambda: (lambda n: n if len(n) >= 30 else None)(jobs(host)), 60, "30 jobs")
    assert len(set(names)) == 30
    rank = [{"high": 0, "normal": 1, "low": 2}[priorities[int(n[1:])]] for n in names]
    assert rank == sorted(rank)
    until(lambda: queue.depth() == {"high": 0, "normal": 0, "low": 0}, 60, "the queue to drain")
    assert queue.dead_letters() == []


def test_a_malformed_message_is_dead_lettered_with_the_reason_and_the_consumer_goes_on(host, queue, consumer):
    queue.publish("{not json", message_id="malformed")
    queue.publish(job_message("nowhere", "x"), message_id="no-workspace")
    queue.publish(job_message(host.workspace, "good"), message_id="good")
    consumer.start()
    until(lambda: jobs(host) == ["good"], 60, "the good message's job")
    dead = {d["id"]: d for d in until(lambda: (lambda d: d if len(d) == 2 else None)(queue.dead_letters()), 60, "2 dead letters")}
    assert dead["malformed"]["reason"] == "MalformedMessage" and "not JSON" in dead["malformed"]["description"]
    assert dead["no-workspace"]["reason"] == "ResourceNotFound" and "nowhere" in dead["no-workspace"]["description"]


def test_a_redelivered_message_creates_one_job(host, namespace, queue):
    queue.publish(job_message(host.workspace, "once"), message_id="key-1")
    (first,) = queue.receive()
    submit_message(host.services, json.loads(first.body), via="queue", idempotency_key=first.id)  # stored, then "crash"
    namespace.expire_locks()
    (again,) = queue.receive()
    assert again.id == "key-1" and again.delivery_count == 2
    with pytest.raises(MessageLockLostError):
        queue.complete(first)
    assert handle(host.services, queue, again) == "completed"
    assert jobs(host) == ["once"] and queue.depth()["normal"] == 0
