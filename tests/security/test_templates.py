"""Templates: rendered in the layouts' sandbox, escaped, strict, bounded, never retroactive."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..conftest import SCOPE_ADMIN, SCOPE_PUBLISH, RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]
ADMIN = {"sub": "ops", "scopes": (SCOPE_ADMIN,)}
TEMPLATE = "/api/v1/admin/templates/task.assigned"
ASSIGNED = {
    "title": "{{ who }} assigned you {{ task }}",
    "body": "Due {{ due }}",
    "action_url": "/tasks/{{ task_id }}",
    "email_subject": "Task: {{ task }}",
    "email_html": "<p>{{ task }}</p>",
}


async def put(server: RunningServer, source: dict[str, Any], path: str = TEMPLATE) -> Any:
    return await server.request("PUT", path, json=source, **ADMIN)


async def publish(server: RunningServer, **body: Any) -> tuple[int, Any]:
    fields = {"user_ids": ["alice"], "type": "task.assigned", **body}
    return await server.request(
        "POST", "/api/v1/notifications", json=fields, sub="svc", scopes=(SCOPE_PUBLISH,)
    )


VARIABLES = {"who": "Bob", "task": "Write report", "due": "Friday", "task_id": 42}


async def test_a_template_is_rendered_stored_and_later_edits_change_nothing_sent(
    server: RunningServer,
) -> None:
    assert (await put(server, ASSIGNED))[0] == 200
    status, answer = await publish(server, template="task.assigned", variables=VARIABLES)
    assert status == 201, answer
    [note] = answer["notifications"]
    assert (note["title"], note["body"], note["action_url"]) == (
        "Bob assigned you Write report",
        "Due Friday",
        "/tasks/42",
    )
    assert (await put(server, {**ASSIGNED, "title": "changed {{ task }}"}))[0] == 200
    status, stored = await server.request("GET", f"/api/v1/notifications/{note['id']}", sub="alice")
    assert status == 200 and stored["title"] == "Bob assigned you Write report"
    status, source = await server.request("GET", TEMPLATE, **ADMIN)
    assert status == 200 and source["title"] == "changed {{ task }}"


async def test_a_missing_variable_is_a_422_naming_it_and_nothing_is_stored(
    server: RunningServer,
) -> None:
    assert (await put(server, ASSIGNED))[0] == 200
    variables = {k: v for k, v in VARIABLES.items() if k != "due"}
    status, answer = await publish(server, template="task.assigned", variables=variables)
    assert status == 422
    assert "'due' is undefined" in answer["error"]["message"]
    assert (await server.request("GET", "/api/v1/notifications", sub="alice"))[1][
        "notifications"
    ] == []


async def test_html_is_escaped_in_the_email_html_and_text_parts_are_not_html(
    server: RunningServer,
) -> None:
    from backend.email.render import render_source

    html = render_source("<p>{{ x }}</p>", {"x": "<script>"}, html=True, max_chars=1000)
    assert html == "<p>&lt;script&gt;</p>"
    text = render_source("{{ x }}", {"x": "<b>"}, max_chars=1000)
    assert text == "<b>"
    # and the publish path renders the HTML part with the escaping environment
    assert (await put(server, {**ASSIGNED, "email_html": "{{ who }"}))[0] == 422


async def test_title_or_template_exactly_one(server: RunningServer) -> None:
    assert (await put(server, ASSIGNED))[0] == 200
    both = {"title": "x", "template": "task.assigned"}
    assert (await publish(server, **both))[0] == 422
    assert (await publish(server, template="task.assigned", body="x", variables={}))[0] == 422
    assert (await publish(server, title="x", variables={}))[0] == 422
    assert (await publish(server))[0] == 422
    status, answer = await publish(server, template="nope", variables={})
    assert status == 404 and "unknown template 'nope'" in answer["error"]["message"]


async def test_unsafe_templates_are_refused_when_stored(server: RunningServer) -> None:
    cases = {
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}": (
            "loops inside loops"
        ),
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}": "macros",
        "{% include '_layout.html' %}": "include",
        "{{ 'a'.ljust(1000000000) }}x{{ 10000000000 }}": "numbers over",
        "{{ ''.__class__ }}{% if %}": "syntax error",
    }
    for source, reason in cases.items():
        status, answer = await put(server, {"title": source})
        assert status == 422, source
        assert reason in answer["error"]["message"], (source, answer)


async def test_expensive_renders_are_refused_quickly_not_hung(make_server: MakeServer) -> None:
    server = await make_server(template_max_output_chars=10_000)
    sources = {
        "huge": "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        "repeat": "{{ 'a' * 100000 * 100000 }}",
        "ljust": "{{ 'a'.ljust(n) }}",
        "center": "{{ 'a'|center(n) }}",
        "private": "{{ who.__class__.__mro__ }}",
        "format": "{{ '{:>99999999}'.format(1) }}",
        "percent": "{{ '%99999999s' % 1 }}",
    }
    for name, source in sources.items():
        path = f"/api/v1/admin/templates/{name}"
        status, answer = await put(server, {"title": "t", "body": source}, path)
        assert status == 200, (name, answer)
        async with asyncio.timeout(10):
            status, answer = await publish(
                server, template=name, variables={"n": 10**9, "who": "x"}
            )
        assert status == 422, (name, answer)
        message = answer["error"]["message"]
        assert "sandbox" in message or "more than 10000" in message or "cannot render" in message


async def test_template_bounds_size_count_and_rendered_title(make_server: MakeServer) -> None:
    server = await make_server(templates_max=1, template_max_chars=50)
    status, answer = await put(server, {"title": "x" * 51})
    assert status == 422 and "the limit is 50" in answer["error"]["message"]
    assert (await put(server, {"title": "{{ t }}"}))[0] == 200
    status, answer = await put(server, {"title": "x"}, "/api/v1/admin/templates/other")
    assert status == 409 and "TEMPLATES_MAX" in answer["error"]["message"]
    status, answer = await publish(server, template="task.assigned", variables={"t": "y" * 300})
    assert status == 422 and "rendered" in answer["error"]["message"]
    assert (await server.request("DELETE", TEMPLATE, **ADMIN))[0] == 204
    assert (await server.request("GET", TEMPLATE, **ADMIN))[0] == 404


async def test_batch_items_render_their_templates_and_a_missing_variable_names_its_item(
    server: RunningServer,
) -> None:
    assert (await put(server, ASSIGNED))[0] == 200
    item = {"user_ids": ["alice"], "type": "task.assigned", "template": "task.assigned",
            "variables": VARIABLES}  # fmt: skip
    plain = {"user_ids": ["alice"], "type": "t", "title": "plain"}
    publisher = {"sub": "svc", "scopes": (SCOPE_PUBLISH,)}
    batch = "/api/v1/notifications/batch"
    status, answer = await server.request("POST", batch, json={"items": [plain, item]}, **publisher)
    assert status == 201, answer
    assert answer["results"][1]["notifications"][0]["title"] == "Bob assigned you Write report"
    broken = {**item, "variables": {k: v for k, v in VARIABLES.items() if k != "due"}}
    status, answer = await server.request(
        "POST", batch, json={"items": [plain, broken]}, **publisher
    )
    assert status == 422, answer
    assert answer["error"]["message"].startswith("items[1]: ")
    assert "'due' is undefined" in answer["error"]["message"]
    listed = (await server.request("GET", "/api/v1/notifications", sub="alice"))[1]
    assert len(listed["notifications"]) == 2  # the first batch only: nothing of the second
