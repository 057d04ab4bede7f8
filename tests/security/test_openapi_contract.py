"""Schema and behaviour agree (issue 11, item 4): schemathesis drives every documented operation
of a real server, from its live /api/v1/openapi.json, with a valid admin+publisher token.

No answer is a 5xx; every answer's status, content type and body are documented; a request the
schema allows is not refused with 4xx-validation, one it forbids is not accepted. The run is
bounded (a fixed number of examples per operation) and reproducible (a fixed seed, derandomized).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.case import Case

from backend.config import Secret, Settings
from backend.email import tokens
from backend.security import SCOPE_ADMIN, SCOPE_PUBLISH, TokenVerifier

from ..conftest import TEST_SECRET, RunningServer
from ..servers import free_port

ROOT = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = 30
SEED = 20261211
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.positive_data_acceptance,
]


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if requests.get(url + "/health/ready", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not become ready")


@pytest.fixture
def api_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """`python -m backend`, as an operator starts it, on a free loopback port."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_SECRET,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "EMAIL_OUTBOX_DIR": str(tmp_path / "outbox"),
        "LOG_LEVEL": "WARNING",
    }
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "backend"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


SERVER_SETTINGS = Settings(jwt_secret=Secret(TEST_SECRET))
USER = "contract-user"


@pytest.fixture
def token() -> str:
    return TokenVerifier(SERVER_SETTINGS).issue(USER, scopes=(SCOPE_PUBLISH, SCOPE_ADMIN))


@pytest.fixture
def unsubscribe_link() -> str:
    """A link's token is a credential, like the bearer token: no schema can say which is valid."""
    key = tokens.signing_key(SERVER_SETTINGS)
    assert key is not None
    scope = tokens.UnsubscribeScope(USER, all_email=True)
    return tokens.issue(key, scope, now=datetime.now(UTC))


@pytest.fixture
def api_schema(api_url: str) -> Any:
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {"deterministic": True, "max-examples": MAX_EXAMPLES, "database": "none"},
        }
    )
    return schemathesis.openapi.from_url(api_url + "/api/v1/openapi.json", config=config)


# The SSE stream answers 200 and never ends, so no generated case could read its answer to the
# end: it is left out of the generated run; tests/test_sse.py pins its 200 text/event-stream,
# 401 and 422 answers, and test_the_event_stream_is_documented_as_such below its document.
STREAM_PATH = "/api/v1/notifications/stream"
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path=STREAM_PATH)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(
    case: Case, token: str, unsubscribe_link: str
) -> None:
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and case.path.endswith("/unsubscribe"):
        case.query = {**(case.query or {}), "token": unsubscribe_link}
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)


# The mismatches the contract run found, pinned one by one (SQLite and PostgreSQL alike).


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"digest_hour": False}, 422),  # a boolean is no integer
        ({"digest_hour": "5"}, 422),  # nor is a string
        ({"digest_hour": 5.0}, 200),  # JSON Schema counts 5.0 as an integer
        ({"timezone": "Mars/Olympus"}, 422),
        ({"timezone": "Europe/Zurich"}, 200),
        ({}, 200),  # the body is optional: {} changes nothing
    ],
)
async def test_preferences_accept_what_the_schema_allows_and_nothing_else(
    server: RunningServer, body: dict[str, Any], status: int
) -> None:
    got, answer = await server.request("PUT", "/api/v1/preferences", sub="u", json=body)
    assert got == status, answer


@pytest.mark.parametrize(
    ("until", "status"),
    [("0.5", 422), ("2026-01-31 09:00:00Z", 422), ("2026-01-31T09:00:00Z", 200)],
)
async def test_email_log_times_are_rfc3339_as_documented(
    server: RunningServer, until: str, status: int
) -> None:
    got, answer = await server.request(
        "GET", "/api/v1/admin/email-logs", sub="op", scopes=(SCOPE_ADMIN,), params={"until": until}
    )
    assert got == status, answer


async def test_publish_schema_says_exactly_one_audience_and_non_blank_ids(
    server: RunningServer,
) -> None:
    _, doc = await server.request("GET", "/api/v1/openapi.json")
    create = doc["components"]["schemas"]["NotificationCreate"]
    assert [branch["required"] for branch in create["oneOf"]] == [["user_ids"], ["topic"]]
    base = {"type": "t", "title": "x"}
    for body in (
        {**base},
        {**base, "user_ids": ["a"], "topic": "news"},
        {**base, "user_ids": ["\xa0"]},
    ):
        status, answer = await server.request(
            "POST", "/api/v1/notifications", sub="p", scopes=(SCOPE_PUBLISH,), json=body
        )
        assert status == 422, (body, answer)


async def test_every_operation_documents_its_errors_with_the_error_body(
    server: RunningServer,
) -> None:
    _, doc = await server.request("GET", "/api/v1/openapi.json")
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            responses = operation["responses"]
            assert "503" in responses, (method, path)
            if "security" in operation:
                assert "401" in responses, (method, path)
            for status, response in responses.items():
                if int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == error
    put_topic = doc["paths"]["/api/v1/topics/{topic}/subscription"]["put"]["responses"]
    assert "403" in put_topic
    header = doc["paths"]["/api/v1/notifications"]["post"]["parameters"][0]
    assert (header["name"], header["in"]) == ("Idempotency-Key", "header")


async def test_the_event_stream_is_documented_as_such(server: RunningServer) -> None:
    _, doc = await server.request("GET", "/api/v1/openapi.json")
    operation = doc["paths"][STREAM_PATH]["get"]
    assert list(operation["responses"]["200"]["content"]) == ["text/event-stream"]
    names = {(p["in"], p["name"]) for p in operation["parameters"]}
    assert names == {("query", "ticket"), ("query", "last_event_id"), ("header", "Last-Event-ID")}
    assert {"401", "422"} <= set(operation["responses"])
