"""REST: publish, list, count, read and delete notifications."""

from __future__ import annotations

from aiohttp import web

from backend import keys
from backend.codec import encoded_size
from backend.errors import Forbidden, Invalid
from backend.schemas import (
    BatchAnswer,
    BatchCreate,
    ListQuery,
    MarkRead,
    NotificationCreate,
    NotificationList,
    NotificationOut,
    PublishHeaders,
    Receipt,
    ReceiptOut,
    UnreadCount,
)
from backend.security import SCOPE_PUBLISH
from backend.services.permissions import authorize_publish

from .http import (
    ApiRoutes,
    authenticate,
    authorize,
    json_response,
    parse_body,
    parse_headers,
    parse_query,
    path_id,
)

api = ApiRoutes(prefix="/api/v1")
TAGS = ("notifications",)


@api.route(
    "POST",
    "/notifications",
    body=NotificationCreate,
    headers=PublishHeaders,
    response=NotificationList,
    status=201,
    scope=SCOPE_PUBLISH,
    tags=TAGS,
    errors={
        403: "a private topic not in the token's topics claim or the key's, or a user the key "
        "may not notify",
        404: "`template` names no stored template",
        409: "Idempotency-Key reused with another body, or its first request still runs",
    },
)
async def create_notifications(request: web.Request) -> web.Response:
    """Publish a notification to users or a topic; one stored per recipient."""
    principal = await authorize(request, SCOPE_PUBLISH)
    key = parse_headers(request, PublishHeaders).idempotency_key
    body = await parse_body(request, NotificationCreate)
    settings = request.app[keys.SETTINGS]
    authorize_publish(
        principal, user_ids=body.user_ids, topic=body.topic, public_topics=settings.public_topics
    )
    limit = settings.max_data_bytes
    size = encoded_size(body.data)
    if size > limit:
        message = f"data is {size} bytes encoded; the limit is {limit}"
        details = [{"loc": ["data"], "msg": message, "type": "too_long"}]
        raise Invalid(message, details=details)
    created = await request.app[keys.NOTIFICATIONS].create(
        publisher=principal.publisher,
        publisher_kind=principal.kind,
        request=body,
        idempotency_key=key,
    )
    response = json_response({"notifications": created.notifications}, status=201)
    if created.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@api.route(
    "POST",
    "/notifications/batch",
    body=BatchCreate,
    response=BatchAnswer,
    status=201,
    scope=SCOPE_PUBLISH,
    tags=TAGS,
    errors={
        403: "an item to a private topic not in the token's topics claim or the key's, or to "
        "a user the key may not notify; nothing was stored",
        404: "an item's `template` names no stored template; nothing was stored",
        409: "an item's idempotency key was used with another item, or its first request "
        "still runs; nothing was stored",
    },
)
async def create_batch(request: web.Request) -> web.Response:
    """Publish many notifications in one transaction: all stored, or none (any invalid item is a
    422 for the whole batch, naming each failing item in `details`); a result per item."""
    principal = await authorize(request, SCOPE_PUBLISH)
    body = await parse_body(request, BatchCreate)
    settings = request.app[keys.SETTINGS]
    for number, item in enumerate(body.items):  # the single publish's rules, for every item
        try:
            authorize_publish(
                principal,
                user_ids=item.user_ids,
                topic=item.topic,
                public_topics=settings.public_topics,
            )
        except Forbidden as exc:
            raise Forbidden(f"items[{number}]: {exc.message}", details=exc.details) from None
    if len(body.items) > settings.max_batch_items:
        message = f"{len(body.items)} items; the limit is {settings.max_batch_items}"
        raise Invalid(message, details=[{"loc": ["items"], "msg": message, "type": "too_long"}])
    details: list[dict[str, object]] = []
    first_with: dict[str, int] = {}
    for number, item in enumerate(body.items):
        size = encoded_size(item.data)
        if size > settings.max_data_bytes:
            message = f"data is {size} bytes encoded; the limit is {settings.max_data_bytes}"
            details.append({"loc": ["items", number, "data"], "msg": message, "type": "too_long"})
        key = item.idempotency_key
        if key is not None and first_with.setdefault(key, number) != number:
            message = f"the same idempotency key as items[{first_with[key]}]"
            loc = ["items", number, "idempotency_key"]
            details.append({"loc": loc, "msg": message, "type": "duplicate"})
    if details:
        raise Invalid(f"{len(details)} invalid item(s); nothing was stored", details=details)
    results = await request.app[keys.NOTIFICATIONS].create_batch(
        publisher=principal.publisher,
        publisher_kind=principal.kind,
        items=[(item.request(), item.idempotency_key) for item in body.items],
        max_recipients=settings.max_batch_recipients,
    )
    answer = [
        {"status": "replayed" if r.replayed else "created", "notifications": r.notifications}
        for r in results
    ]
    return json_response({"results": answer}, status=201)


@api.route(
    "GET", "/notifications", query=ListQuery, response=NotificationList, status=200, tags=TAGS
)
async def list_notifications(request: web.Request) -> web.Response:
    """The caller's notifications, newest first, by cursor."""
    claims = authenticate(request)
    query = parse_query(request, ListQuery)
    items, next_cursor = await request.app[keys.NOTIFICATIONS].list_page(
        user_id=claims.sub,
        unread_only=query.unread,
        limit=query.limit,
        cursor=int(query.cursor) if query.cursor else None,
    )
    return json_response({"notifications": items, "next_cursor": next_cursor})


@api.route("GET", "/notifications/unread-count", response=UnreadCount, status=200, tags=TAGS)
async def unread_count(request: web.Request) -> web.Response:
    """The caller's exact unread count."""
    claims = authenticate(request)
    count = await request.app[keys.NOTIFICATIONS].unread_count(user_id=claims.sub)
    return json_response({"count": count})


@api.route(
    "POST",
    "/notifications/read",
    body=MarkRead,
    status=204,
    tags=TAGS,
    errors={404: "`id` is not one of the caller's notifications"},
)
async def mark_read(request: web.Request) -> web.Response:
    """Mark some of the caller's notifications read: {"ids": [...]} or {"id": n}."""
    claims = authenticate(request)
    body = await parse_body(request, MarkRead)
    await request.app[keys.NOTIFICATIONS].mark_read(
        user_id=claims.sub, ids=body.all_ids(), require_found=body.id is not None
    )
    return web.Response(status=204)


def receipt_seqs(receipt: Receipt, limit: int) -> list[int]:
    """The receipt's seqs, held to RECEIPT_MAX_SEQS (a 422, like the schema's own bounds)."""
    if len(receipt.seqs) > limit:
        message = f"a receipt holds at most {limit} seqs, got {len(receipt.seqs)}"
        raise Invalid(message, details=[{"loc": ["seqs"], "msg": message, "type": "too_long"}])
    return receipt.seqs


@api.route("POST", "/notifications/received", body=Receipt, response=ReceiptOut, status=200,
           tags=TAGS)  # fmt: skip
async def received(request: web.Request) -> web.Response:
    """A delivery receipt over REST (Server-Sent Events readers, or any client): these seqs
    reached a device. The first receipt sets `delivered_at`; later ones change nothing."""
    claims = authenticate(request)
    body = await parse_body(request, Receipt)
    seqs = receipt_seqs(body, request.app[keys.SETTINGS].receipt_max_seqs)
    ids = await request.app[keys.NOTIFICATIONS].mark_delivered(
        user_id=claims.sub, seqs=seqs, via="rest"
    )
    return json_response({"delivered": ids})


@api.route("POST", "/notifications/read-all", status=204, tags=TAGS)
async def mark_all_read(request: web.Request) -> web.Response:
    """Mark every notification of the caller read."""
    claims = authenticate(request)
    await request.app[keys.NOTIFICATIONS].mark_all_read(user_id=claims.sub)
    return web.Response(status=204)


@api.route("GET", "/notifications/{id:[0-9]+}", response=NotificationOut, status=200, tags=TAGS)
async def get_notification(request: web.Request) -> web.Response:
    """One of the caller's notifications; 404 if it is not theirs."""
    claims = authenticate(request)
    item = await request.app[keys.NOTIFICATIONS].get(
        user_id=claims.sub, notification_id=path_id(request)
    )
    return json_response(item)


@api.route("POST", "/notifications/{id:[0-9]+}/read", status=204, tags=TAGS)
async def mark_one_read(request: web.Request) -> web.Response:
    """Mark one of the caller's notifications read."""
    claims = authenticate(request)
    await request.app[keys.NOTIFICATIONS].mark_read(
        user_id=claims.sub, ids=[path_id(request)], require_found=True
    )
    return web.Response(status=204)


@api.route("DELETE", "/notifications/{id:[0-9]+}", status=204, tags=TAGS)
async def delete_notification(request: web.Request) -> web.Response:
    """Soft-delete one of the caller's notifications."""
    claims = authenticate(request)
    await request.app[keys.NOTIFICATIONS].delete(
        user_id=claims.sub, notification_id=path_id(request)
    )
    return web.Response(status=204)
