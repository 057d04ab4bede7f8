"""Publish to the notification server through Redis from another Python service.

The server reads what this sends when started with, for example,
`REDIS_URL=redis://127.0.0.1:6379/0 INGEST_REDIS_STREAMS=notifications
INGEST_REDIS_CHANNELS=task_updates python -m backend`.

- The stream is the durable way: the message waits in Redis until a server process has stored
  it, and it is stored once even if it is delivered twice (a process died before its XACK).
- The channel is fire-and-forget: nobody listening, nothing stored.

`backend/publisher.py` needs only redis-py (`pip install redis`): copy it into your service.

Run it: python docs/examples/publisher.py redis://127.0.0.1:6379/0 alice
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout

from backend.publisher import Publisher  # noqa: E402


async def main(url: str, user_id: str) -> None:
    async with Publisher(url) as publisher:
        # A notification request, the body of POST /api/v1/notifications, on the stream.
        key = await publisher.notify(
            user_ids=[user_id],
            type="task.assigned",
            title="You have a new task",
            body="Write the quarterly report",
            action_url="/tasks/42",
            data={"task_id": 42},
            stream="notifications",
        )
        print(f"notification request queued on stream 'notifications' (key {key})")
        # A CloudEvent, mapped like one delivered by Dapr ("New task: Write report").
        event_id = await publisher.cloudevent(
            type="taskflow.tasks.created",
            source="/taskflow/api",
            subject="task-42",
            data={"task_id": "42", "title": "Write report", "user_id": user_id},
            channel="task_updates",
        )
        print(f"CloudEvent {event_id} published on channel 'task_updates'")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "alice"))
