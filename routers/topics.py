"""REST: the caller's durable topic subscriptions; a topic publish stores one per subscriber."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from backend import keys
from backend.schemas import TopicName
from backend.services import topics as service

from .http import ApiRoutes, authenticate, path_value

api = ApiRoutes(prefix="/api/v1")
TAGS = ("topics",)
PATH = {"topic": TypeAdapter(TopicName)}


class Subscriptions(BaseModel):
    topics: list[str]


def topic_of(request: web.Request) -> str:
    topic: str = path_value(request, "topic", PATH["topic"])
    return topic


@api.route("GET", "/topics/subscriptions", response=Subscriptions, status=200, tags=TAGS)
async def list_subscriptions(request: web.Request) -> web.Response:
    """The topics the caller is subscribed to."""
    claims = authenticate(request)
    topics = await service.subscriptions(
        sessionmaker=request.app[keys.SESSIONMAKER], user_id=claims.sub
    )
    return web.json_response({"topics": topics})


@api.route(
    "PUT",
    "/topics/{topic}/subscription",
    path_types=PATH,
    status=204,
    tags=TAGS,
    errors={403: "a private topic that the token's `topics` claim does not name"},
)
async def subscribe(request: web.Request) -> web.Response:
    """Subscribe to a public topic, or a private one the token's `topics` claim names."""
    claims = authenticate(request)
    topic = topic_of(request)
    service.authorize_topic(claims, topic, request.app[keys.SETTINGS].public_topics)
    await service.subscribe(
        sessionmaker=request.app[keys.SESSIONMAKER], user_id=claims.sub, topic=topic
    )
    return web.Response(status=204)


@api.route("DELETE", "/topics/{topic}/subscription", path_types=PATH, status=204, tags=TAGS)
async def unsubscribe(request: web.Request) -> web.Response:
    """Stop receiving a topic's notifications (idempotent)."""
    claims = authenticate(request)
    await service.unsubscribe(
        sessionmaker=request.app[keys.SESSIONMAKER], user_id=claims.sub, topic=topic_of(request)
    )
    return web.Response(status=204)
