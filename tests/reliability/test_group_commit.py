"""Group commit shares transactions between requests, but a batch stops at its recipient cap, so
large fan-outs are written in slices that are delivered while the next slice is written."""

from __future__ import annotations

import asyncio

from backend.schemas import NotificationCreate
from backend.services.batching import GroupCommit
from backend.services.notifications import RECIPIENTS_PER_BATCH, _recipients_named


def request(users: int) -> tuple[str, str, NotificationCreate]:
    body = NotificationCreate.model_validate(
        {"type": "t", "title": "x", "user_ids": [f"u{i}" for i in range(users)]}
    )
    return ("publisher", "token", body)


async def batches_for(sizes: list[int]) -> list[list[int]]:
    """The batches a GroupCommit with the service's weighing makes of requests submitted
    together, as recipient counts."""
    seen: list[list[int]] = []

    async def run(items: list[tuple[str, str, NotificationCreate]]) -> list[int]:
        seen.append([len(item[2].user_ids or ()) for item in items])
        await asyncio.sleep(0.01)  # a transaction's round trips: later requests queue up
        return [0] * len(items)

    group: GroupCommit[tuple[str, str, NotificationCreate], int] = GroupCommit(
        run, concurrency=1, weight=_recipients_named, max_weight=RECIPIENTS_PER_BATCH
    )
    await asyncio.wait_for(
        asyncio.gather(*(group.submit(request(size)) for size in sizes)), timeout=10
    )
    return seen


async def test_publishes_to_a_thousand_users_each_get_their_own_transaction() -> None:
    assert await batches_for([1000] * 5) == [[1000]] * 5


async def test_small_publishes_still_share_a_transaction_up_to_the_recipient_cap() -> None:
    seen = await batches_for([1] * 300 + [400, 400, 400])
    assert seen[0] == [1] * 256  # max_batch
    assert seen[1] == [1] * 44 + [400, 400]  # 844; a third 400 would pass 1,000
    assert seen[2] == [400]
    assert sum(len(batch) for batch in seen) == 303


async def test_a_request_at_the_cap_shares_with_nobody() -> None:
    assert await batches_for([5, 1000, 3]) == [[5], [1000], [3]]
