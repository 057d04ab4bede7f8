"""Group commit: concurrent requests share one transaction, each awaiting its own result.

There is no timer: while the batches in flight are being written, new requests queue up, and
the next batch takes them all (up to a cap). At low load a request goes alone and waits for
nobody; under load, round trips and commits are shared by many requests. Up to `concurrency`
batches are written at once, so one batch's round trips overlap the next one's work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from ..db import is_unavailable

Item = TypeVar("Item")
Result = TypeVar("Result")
log = logging.getLogger(__name__)


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self,
        run: Callable[[list[Item]], Awaitable[list[Result]]],
        *,
        max_batch: int = 256,
        concurrency: int = 1,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._workers: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._workers) < self._concurrency:
            worker = asyncio.create_task(self._drain())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        return await future

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let requests that arrived together join the first batch
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            await self._write(batch)

    async def _write(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or is_unavailable(exc):
                # Alone, or the database is away (each one would fail the same way): all fail.
                for _, future in batch:
                    _settle(future, exc)
                return
            # One bad request must not fail the others: write each on its own.
            log.warning("group commit of %d failed (%r); retrying one by one", len(batch), exc)
            for one in batch:
                await self._write([one])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def _settle(future: asyncio.Future[Result], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
