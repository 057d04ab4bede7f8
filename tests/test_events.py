"""CloudEvents in (issue 13, items 1 and 4): posted as a Dapr sidecar posts them, mapped to
notifications that reach the user's socket, stored once, dropped with a reason when they never
can be, and kept in the audit trail."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from backend import keys
from backend.config import ConfigError, Secret, load_settings
from backend.models import Event, Notification

from .conftest import SCOPE_ADMIN, SCOPE_PUBLISH, RunningServer

DAPR_TOKEN = "dapr-app-token-0123456789"
EVENTS = "/api/v1/events"
Start = Callable[..., Awaitable[RunningServer]]


def task_event(event_id: str = "e-1", *, kind: str = "created", **data: Any) -> dict[str, Any]:
    """A structured CloudEvent as TaskFlow publishes it."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/taskflow/api",
        "type": f"taskflow.tasks.{kind}",
        "subject": "task-42",
        "time": "2026-12-01T09:00:00Z",
        "datacontenttype": "application/json",
        "data": {"task_id": "42", "title": "Write report", "user_id": "alice", **data},
    }


def dapr_wrapped(topic: str, payload: dict[str, Any], event_id: str = "d-1") -> dict[str, Any]:
    """What a Dapr sidecar delivers for a plain JSON payload published to a topic."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "taskflow-api",
        "type": "com.dapr.event.sent",
        "topic": topic,
        "pubsubname": "taskflow-pubsub",
        "datacontenttype": "application/json",
        "data": payload,
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "",
    }


async def post_event(
    server: RunningServer, body: Any, *, raw: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:  # fmt: skip
    sent = {"Content-Type": "application/cloudevents+json", "dapr-api-token": DAPR_TOKEN}
    sent.update(headers or {})
    data = raw if raw is not None else json.dumps(body).encode()
    return await server.request("POST", EVENTS, data=data, headers=sent)


@pytest.fixture
async def dapr_server(make_server: Start) -> RunningServer:
    return await make_server(dapr_api_token=Secret(DAPR_TOKEN))


async def audit(server: RunningServer, **params: str) -> tuple[int, Any]:
    return await server.request(
        "GET", "/api/v1/admin/events", sub="op", scopes=(SCOPE_ADMIN,), params=params
    )


async def test_dapr_subscribe_lists_every_topic_on_the_events_route(make_server: Start) -> None:
    server = await make_server()
    status, answer = await server.request("GET", "/dapr/subscribe")
    assert status == 200
    assert [item["topic"] for item in answer] == [
        "taskflow.tasks.created",
        "taskflow.tasks.updated",
        "taskflow.tasks.completed",
        "taskflow.tasks.deleted",
        "taskflow.tasks.reminder-triggered",
    ]
    assert {(i["pubsubname"], i["route"]) for i in answer} == {("taskflow-pubsub", EVENTS)}
    other = await make_server(dapr_pubsub_name="kafka-pubsub", dapr_topics=("billing.paid",))
    _, answer = await other.request("GET", "/dapr/subscribe")
    assert answer == [{"pubsubname": "kafka-pubsub", "topic": "billing.paid", "route": EVENTS}]


async def test_a_structured_cloudevent_from_a_dapr_sidecar_reaches_the_users_socket(
    dapr_server: RunningServer,
) -> None:
    alice = await dapr_server.connect("alice")
    status, answer = await post_event(dapr_server, task_event())
    assert status == 200, answer
    assert answer["status"] == "SUCCESS"
    [note] = await alice.wait_for("notification")
    assert note["type"] == "task.created"
    assert note["title"] == "New task: Write report"
    assert note["action_url"] == "/tasks/42"
    assert note["data"] == {"task_id": "42", "title": "Write report", "user_id": "alice"}
    assert answer["notification_ids"] == [note["id"]]
    async with dapr_server.app[keys.SESSIONMAKER]() as session:
        publisher = await session.scalar(
            select(Notification.publisher).where(Notification.id == note["id"])
        )
    assert publisher == "/taskflow/api"  # the event's source published it


async def test_every_published_notification_records_its_publisher(
    dapr_server: RunningServer,
) -> None:
    """REST publishes by several tokens at once (one group commit) record each token's sub."""

    async def publish(sub: str) -> int:
        status, answer = await dapr_server.request(
            "POST", "/api/v1/notifications", sub=sub, scopes=(SCOPE_PUBLISH,),
            json={"user_ids": ["erin"], "type": "test", "title": f"from {sub}"},
        )  # fmt: skip
        assert status == 201, answer
        return int(answer["notifications"][0]["id"])

    subs = [f"service-{n}" for n in range(8)]
    ids = await asyncio.gather(*(publish(sub) for sub in subs))
    async with dapr_server.app[keys.SESSIONMAKER]() as session:
        rows = dict(
            (await session.execute(
                select(Notification.id, Notification.publisher).where(Notification.id.in_(ids))
            )).tuples().all()
        )  # fmt: skip
    assert [rows[i] for i in ids] == subs


async def test_a_binary_cloudevent_with_a_publisher_token_reaches_the_users_socket(
    dapr_server: RunningServer,
) -> None:
    bob = await dapr_server.connect("bob")
    headers = {
        **dapr_server.auth("taskflow", SCOPE_PUBLISH),
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-source": "/taskflow/api",
        "ce-type": "taskflow.tasks.reminder-triggered",
        "ce-time": "2026-12-01T09:00:00Z",
        "Content-Type": "application/json",
    }
    data = {"task_id": "7", "title": "Pay rent", "due_date": "2026-12-02", "user_ids": ["bob"]}
    status, answer = await dapr_server.request(
        "POST", EVENTS, data=json.dumps(data).encode(), headers=headers
    )
    assert (status, answer["status"]) == (200, "SUCCESS"), answer
    [note] = await bob.wait_for("notification")
    assert (note["type"], note["title"]) == (
        "task.reminder",
        "Reminder: Pay rent is due 2026-12-02",
    )


async def test_a_payload_dapr_wrapped_is_mapped_by_its_event_type_or_else_its_topic(
    dapr_server: RunningServer,
) -> None:
    carol = await dapr_server.connect("carol")
    payload = {"task_id": "9", "title": "Ship", "assignee_ids": ["carol"]}
    by_topic = dapr_wrapped("taskflow.tasks.completed", payload, event_id="d-1")
    status, answer = await post_event(dapr_server, by_topic)
    assert (status, answer["status"]) == (200, "SUCCESS"), answer
    by_type = dapr_wrapped(
        "taskflow.tasks.completed", {**payload, "event_type": "taskflow.tasks.deleted"}, "d-2"
    )
    status, answer = await post_event(dapr_server, by_type)
    assert (status, answer["status"]) == (200, "SUCCESS"), answer
    first, second = await carol.wait_for("notification", 2)
    assert (first["type"], first["title"]) == ("task.completed", "Task completed: Ship")
    assert (second["type"], second["action_url"]) == ("task.deleted", None)
    _, history = await audit(dapr_server, subject="task-9")
    assert [e["type"] for e in history["events"]] == [
        "taskflow.tasks.completed",
        "taskflow.tasks.deleted",
    ]


async def test_the_same_event_delivered_twice_gives_one_notification(
    dapr_server: RunningServer,
) -> None:
    alice = await dapr_server.connect("alice")
    _, first = await post_event(dapr_server, task_event("same"))
    _, again = await post_event(dapr_server, task_event("same", title="changed on the way"))
    assert first["status"] == again["status"] == "SUCCESS"
    assert again["duplicate"] is True
    assert again["notification_ids"] == first["notification_ids"]
    await alice.wait_for("notification")
    status, page = await dapr_server.request("GET", "/api/v1/notifications", sub="alice")
    assert [n["title"] for n in page["notifications"]] == ["New task: Write report"]
    # Another source may reuse the id: it is another event.
    other = {**task_event("same"), "source": "/another/service"}
    _, answer = await post_event(dapr_server, other)
    assert answer.get("duplicate") is None and len(answer["notification_ids"]) == 1


DROPS = [
    ("malformed JSON", None, b'{"specversion": "1.0", ', "malformed"),
    ("no CloudEvent", {"hello": "world"}, None, "malformed"),
    ("wrong specversion", {**task_event(), "specversion": "0.3"}, None, "malformed"),
    ("unmapped type", {**task_event(), "type": "billing.invoice.paid"}, None, "unmapped"),
    ("no recipient", {**task_event(), "data": {"task_id": "1", "title": "x"}}, None, "no_recipient"),
    (
        "missing template field",
        {**task_event(kind="reminder-triggered")},
        None,
        "missing_field",
    ),
    ("data not an object", {**task_event(), "data": [1, 2]}, None, "invalid"),
    ("bad recipient", {**task_event(), "data": {"title": "x", "user_id": 5}}, None, "invalid"),
    ("data too large", task_event(notes="x" * 20_000), None, "too_large"),
    ("data too deep", {**task_event(), "data": {"a": json.loads("[" * 40 + "]" * 40)}}, None,
     "too_deep"),
    ("body too large", None, b'{"a": "' + b"x" * 300_000 + b'"}', "too_large"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "raw", "kind"), [d[1:] for d in DROPS], ids=[d[0] for d in DROPS])
async def test_an_event_that_can_never_succeed_is_answered_drop_logged_and_counted(
    dapr_server: RunningServer,
    body: Any,
    raw: bytes | None,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    status, answer = await post_event(dapr_server, body, raw=raw)
    assert (status, answer["status"]) == (200, "DROP"), answer
    assert answer["reason"]
    [line] = [r.getMessage() for r in caplog.records if "event dropped" in r.getMessage()]
    assert f"({kind})" in line and "\n" not in line
    assert dapr_server.app[keys.EVENTS].drops[kind] == 1
    async with dapr_server.http.get(dapr_server.url + "/metrics") as resp:
        metrics = await resp.text()
    assert f'notify_events_dropped_total{{reason="{kind}"}} 1.0' in metrics
    _, page = await dapr_server.request("GET", "/api/v1/notifications", sub="alice")
    assert page["notifications"] == []


async def test_a_dropped_event_with_an_id_is_kept_in_the_audit_with_its_reason(
    dapr_server: RunningServer,
) -> None:
    await post_event(dapr_server, {**task_event("nobody"), "data": {"task_id": "42", "title": "x"}})
    await post_event(dapr_server, task_event("big", notes="x" * 20_000))
    _, history = await audit(dapr_server, subject="task-42")
    dropped = history["events"]
    assert [(e["event_id"], e["outcome"]) for e in dropped] == [
        ("nobody", "dropped"), ("big", "dropped"),
    ]  # fmt: skip
    assert "no recipient" in dropped[0]["reason"] and dropped[0]["notification_ids"] == []
    assert dropped[1]["data"] is None  # too large to keep


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"dapr-api-token": ""}, 401),  # neither a matching token nor a JWT
        ({"dapr-api-token": "wrong-token"}, 401),
        ({"dapr-api-token": "", "Authorization": "Bearer nonsense"}, 401),
    ],
)
async def test_an_event_without_the_dapr_token_or_a_publisher_jwt_is_refused(
    dapr_server: RunningServer, headers: dict[str, str], status: int
) -> None:
    sent = {"Content-Type": "application/cloudevents+json", **headers}
    if sent["dapr-api-token"] == "":
        del sent["dapr-api-token"]
    got, answer = await dapr_server.request(
        "POST", EVENTS, data=json.dumps(task_event()).encode(), headers=sent
    )
    assert got == status, answer


async def test_a_jwt_without_the_publish_scope_is_forbidden_and_a_dapr_token_unset_is_ignored(
    make_server: Start,
) -> None:
    server = await make_server()  # no DAPR_API_TOKEN: the header proves nothing
    body = json.dumps(task_event()).encode()
    plain = {"Content-Type": "application/cloudevents+json"}
    status, _ = await server.request(
        "POST", EVENTS, data=body, headers={**plain, "dapr-api-token": "anything"}
    )
    assert status == 401
    status, _ = await server.request("POST", EVENTS, data=body, headers=plain, sub="someone")
    assert status == 403
    status, answer = await server.request(
        "POST", EVENTS, data=body, headers=plain, sub="svc", scopes=(SCOPE_PUBLISH,)
    )
    assert (status, answer["status"]) == (200, "SUCCESS")


async def test_the_audit_returns_the_history_in_order_by_subject_type_and_time_with_a_cursor(
    dapr_server: RunningServer,
) -> None:
    for number, kind in enumerate(["created", "updated", "completed"]):
        await post_event(dapr_server, task_event(f"a-{number}", kind=kind))
    other = task_event("b-0", task_id="43")
    other["subject"] = "task-43"
    await post_event(dapr_server, other)
    status, page = await audit(dapr_server, subject="task-42", limit="2")
    assert status == 200
    assert [e["event_id"] for e in page["events"]] == ["a-0", "a-1"]
    _, rest = await audit(dapr_server, subject="task-42", limit="2", cursor=page["next_cursor"])
    assert [e["event_id"] for e in rest["events"]] == ["a-2"] and rest["next_cursor"] is None
    first = page["events"][0]
    assert first["source"] == "/taskflow/api" and first["outcome"] == "stored"
    assert first["time"] == "2026-12-01T09:00:00.000000Z" and len(first["notification_ids"]) == 1
    _, by_type = await audit(dapr_server, type="taskflow.tasks.created")
    assert [e["event_id"] for e in by_type["events"]] == ["a-0", "b-0"]
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    _, none = await audit(dapr_server, since=later)
    _, every = await audit(dapr_server, until=later)
    assert none["events"] == [] and len(every["events"]) == 4
    status, _ = await dapr_server.request(
        "GET", "/api/v1/admin/events", sub="publisher", scopes=(SCOPE_PUBLISH,)
    )
    assert status == 403


async def test_events_past_their_retention_are_purged_in_batches(
    dapr_server: RunningServer,
) -> None:
    for number in range(5):
        await post_event(dapr_server, task_event(f"p-{number}"))
    async with dapr_server.app[keys.SESSIONMAKER].begin() as session:
        old = datetime.now(UTC) - timedelta(days=100)
        await session.execute(update(Event).where(Event.event_id != "p-4").values(received_at=old))
    ingest = dapr_server.app[keys.EVENTS]
    purged = await ingest.purge(older_than=datetime.now(UTC) - timedelta(days=90), batch=2)
    assert purged == 4
    _, history = await audit(dapr_server)
    assert [e["event_id"] for e in history["events"]] == ["p-4"]


MAPPINGS_JSON = {
    "mappings": {
        "billing.invoice.paid": {
            "type": "invoice.paid",
            "title": "Invoice {number} paid",
            "body": "{amount} received",
            "action_url": "/invoices/{number}",
            "recipients": ["customer_id"],
        },
        "taskflow.tasks.created": {"type": "task.new", "title": "Task: {title}"},
    }
}


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
async def test_a_mappings_file_adds_and_overrides_mappings(
    make_server: Start, tmp_path: Path, suffix: str
) -> None:
    import yaml

    path = tmp_path / f"mappings{suffix}"
    dump = json.dumps if suffix == ".json" else yaml.safe_dump
    path.write_text(dump(MAPPINGS_JSON))
    server = await make_server(dapr_api_token=Secret(DAPR_TOKEN), event_mappings=str(path))
    dave = await server.connect("dave")
    invoice = {
        **task_event("i-1"),
        "type": "billing.invoice.paid",
        "data": {"number": "A/7 ?x", "amount": 12.5, "customer_id": "dave"},
    }
    await post_event(server, invoice)
    await post_event(server, task_event("t-1", user_id="dave"))
    first, second = await dave.wait_for("notification", 2)
    assert (first["type"], first["title"], first["body"]) == (
        "invoice.paid", "Invoice A/7 ?x paid", "12.5 received",
    )  # fmt: skip
    assert first["action_url"] == "/invoices/A%2F7%20%3Fx"  # data cannot change the path
    assert (second["type"], second["title"]) == ("task.new", "Task: Write report")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"mappings": {"x": {"type": "t"}}}', "mappings.x.title: Field required"),
        ('{"mappings": {"x": {"type": "t", "title": "{user.password}"}}}', "plain name"),
        ('{"mappings": {"x": {"type": "t", "title": "{title:>999999999}"}}}', "format specs"),
        ('{"mappings": {"x": {"type": "t", "title": "x", "colour": "red"}}}', "colour"),
        ('{"mappings": {"x": {"type": "has space", "title": "x"}}}', "mappings.x.type"),
    ],
)
def test_a_bad_mappings_file_stops_start_up_with_one_line(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "mappings.json"
    path.write_text(content)
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"}
    with pytest.raises(ConfigError) as error:
        load_settings({**env, "EVENT_MAPPINGS": str(path)})
    text = str(error.value)
    assert text.startswith("EVENT_MAPPINGS ") and message in text and "\n" not in text
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings({**env, "EVENT_MAPPINGS": str(tmp_path / "absent.yaml")})


def test_event_settings_are_read_and_checked(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"}
    settings = load_settings(
        {**env, "DAPR_TOPICS": "a.b, c-d", "DAPR_API_TOKEN": "t", "EVENTS_RETENTION_DAYS": "0"}
    )
    assert settings.dapr_topics == ("a.b", "c-d")
    assert settings.dapr_api_token is not None and settings.events_retention_days == 0
    with pytest.raises(ConfigError, match="DAPR_TOPICS"):
        load_settings({**env, "DAPR_TOPICS": "a b"})
    with pytest.raises(ConfigError, match="EVENTS_RETENTION_DAYS"):
        load_settings({**env, "EVENTS_RETENTION_DAYS": "-1"})
