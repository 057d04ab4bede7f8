"""The admin overview: admin scope only, and its numbers move by exactly what happened."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from backend.metrics import Metrics, quantiles
from backend.security import SCOPE_ADMIN

from ..conftest import RunningServer, refused_connect

ADMIN = {"sub": "ops", "scopes": (SCOPE_ADMIN,)}


async def overview(server: RunningServer) -> dict[str, Any]:
    status, body = await server.request("GET", "/api/v1/admin/overview", **ADMIN)
    assert status == 200, body
    return body


async def test_the_overview_needs_the_admin_scope(server: RunningServer) -> None:
    status, body = await server.request("GET", "/api/v1/admin/overview")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await server.request(
        "GET", "/api/v1/admin/overview", sub="alice", scopes=("notifications:publish",)
    )
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert "notifications:admin" in body["error"]["message"]


async def test_overview_numbers_move_by_exactly_what_happened(
    make_server: Callable[..., Awaitable[RunningServer]],
) -> None:
    server = await make_server(email_worker_enabled=False)  # the email stays queued
    before = await overview(server)
    assert len(before["notifications_per_minute"]["counts"]) == 60

    device = await server.connect("alice")
    [first, _] = await server.publish(["alice", "bob"], title="one")  # one publish, two rows
    await device.wait_for("notification")
    assert await device.call("received", {"seqs": [first["seq"]]}) == {"ok": True, "delivered": 1}
    await refused_connect(server, {"token": "not-a-token"})
    status, _ = await server.request(
        "PUT", "/api/v1/admin/users/bob", json={"email": "bob@example.com"}, **ADMIN
    )
    assert status == 200
    await server.publish(["bob"], title="emailed")

    after = await overview(server)
    assert after["notifications_stored"] - before["notifications_stored"] == 3
    minutes = after["notifications_per_minute"]["counts"]
    assert sum(minutes) - sum(before["notifications_per_minute"]["counts"]) == 3
    assert after["commit_to_emit"]["count"] - before["commit_to_emit"]["count"] == 2
    assert after["commit_to_receipt"]["count"] - before["commit_to_receipt"]["count"] == 1
    assert after["commit_to_receipt"]["p50"] is not None
    assert after["refusals"]["auth"] - before["refusals"]["auth"] == 1
    assert after["emails"]["queued"] - before["emails"]["queued"] == 1
    assert after["deliveries"] > before["deliveries"]
    assert set(after["recoveries"]) == {"recovered", "too_far", "failed", "deferred"}
    assert after["process"] == before["process"]


def test_percentiles_interpolate_within_buckets_like_histogram_quantile() -> None:
    metrics = Metrics()
    # cumulative: ≤0.0025: 2, ≤0.005: 4, ≤0.01: 4, ≤0.025: 5
    for seconds in (0.002, 0.002, 0.004, 0.004, 0.02):
        metrics.commit_to_emit.observe(seconds)
    metric = metrics.read()["notify_publish_commit_to_emit_seconds"]
    count, values = quantiles(metric, (0.5, 0.9, 0.99))
    assert count == 5
    assert values[0.5] == pytest.approx(0.0025 + (0.005 - 0.0025) * (2.5 - 2) / 2)
    assert values[0.9] == pytest.approx(0.01 + (0.025 - 0.01) * (4.5 - 4) / 1)
    assert quantiles(metrics.read()["notify_commit_to_receipt_seconds"], (0.5,)) == (0, {0.5: None})


async def test_the_dev_admin_token_exists_only_in_dev_mode(
    make_server: Callable[..., Awaitable[RunningServer]],
) -> None:
    real = await make_server()
    status, body = await real.request("POST", "/api/v1/dev/admin-token", json={"sub": "ops"})
    assert status == 404 and body["error"]["code"] == "not_found"
    dev = await make_server(dev_mode=True)
    status, body = await dev.request("POST", "/api/v1/dev/admin-token", json={"sub": "ops"})
    assert status == 200
    headers = {"Authorization": f"Bearer {body['token']}"}
    status, _ = await dev.request("GET", "/api/v1/admin/overview", headers=headers)
    assert status == 200
