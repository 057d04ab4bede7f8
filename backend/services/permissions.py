"""What a publisher may publish to: the same checks for a token and for an API key."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import Forbidden
from ..security import Principal


def authorize_publish(
    principal: Principal,
    *,
    user_ids: Sequence[str] | None,
    topic: str | None,
    public_topics: Iterable[str],
) -> None:
    """A public topic needs the publish scope only (checked before); a private one must be named
    by the token's `topics` claim or the key's topics. Users: any for a token, a key's rule."""
    if topic is not None and topic not in public_topics and topic not in principal.topics:
        who = "API key" if principal.key_id is not None else "token's topics claim"
        raise Forbidden(
            f"topic {topic!r} is private and this {who} does not allow it",
            details={"topic": topic},
        )
    if user_ids is None or principal.any_user:
        return
    for user_id in user_ids:
        if not user_id.startswith(principal.user_prefixes):
            raise Forbidden(
                f"this API key may not notify user {user_id!r}", details={"user_id": user_id}
            )
