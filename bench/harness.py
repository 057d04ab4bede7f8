"""The orchestrator's side: a pool of agent processes, each on its own source address."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import orjson

from .servers import BENCH, proc_rss_bytes


class AgentProc:
    def __init__(self, proc: asyncio.subprocess.Process, source: str) -> None:
        self.proc = proc
        self.source = source
        self.lock = asyncio.Lock()

    async def call(self, msg: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self.lock, asyncio.timeout(timeout):
            self.proc.stdin.write(orjson.dumps(msg) + b"\n")
            await self.proc.stdin.drain()
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"agent {self.source} exited ({self.proc.returncode})")
        answer = orjson.loads(line)
        if "error" in answer:
            raise RuntimeError(f"agent {self.source}: {answer['error']}")
        return answer


class AgentPool:
    """`clients` agents hold connections; `publishers` agents send POSTs."""

    def __init__(self, clients: list[AgentProc], publishers: list[AgentProc]) -> None:
        self.clients = clients
        self.publishers = publishers

    @classmethod
    async def start(
        cls, *, clients: int, publishers: int, secret: str, cpus: str | None, subnet: int = 1
    ) -> AgentPool:
        async def spawn(i: int) -> AgentProc:
            source = f"127.0.{subnet}.{i + 1}"
            command = [sys.executable, "-m", "bench.agent", "--source", source, "--secret", secret]
            if cpus:
                command = ["taskset", "-c", cpus, *command]
            proc = await asyncio.create_subprocess_exec(
                *command,
                cwd=BENCH.parent,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 26,
            )
            return AgentProc(proc, source)

        procs = await asyncio.gather(*(spawn(i) for i in range(clients + publishers)))
        return cls(list(procs[:clients]), list(procs[clients:]))

    async def all_clients(self, msg: dict[str, Any], timeout: float = 120) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(a.call(msg, timeout) for a in self.clients)))

    async def connect(
        self,
        endpoints: list[tuple[str, int]],
        prefix: str,
        n: int,
        concurrency: int = 64,
        timeout: float = 120,
        compress: bool = False,
    ) -> dict[str, Any]:
        """Users prefix0..prefix{n-1}, split evenly over the client agents (and endpoints)."""
        k = len(self.clients)
        calls = []
        start = 0
        for i, agent in enumerate(self.clients):
            count = n // k + (1 if i < n % k else 0)
            host, port = endpoints[i % len(endpoints)]
            calls.append(
                agent.call(
                    {
                        "cmd": "connect",
                        "host": host,
                        "port": port,
                        "prefix": prefix,
                        "start": start,
                        "count": count,
                        "concurrency": concurrency,
                        "timeout": min(timeout, 30),
                        "compress": compress,
                    },
                    timeout,
                )  # fmt: skip
            )
            start += count
        answers = await asyncio.gather(*calls)
        return merge_connect(answers)

    async def received(self) -> int:
        return sum(a["received"] for a in await self.all_clients({"cmd": "count"}))

    async def wait_received(self, expected: int, timeout: float) -> int:
        """Poll until `expected` notifications arrived in total, or `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        got = await self.received()
        while got < expected and loop.time() < deadline:
            await asyncio.sleep(0.05)
            got = await self.received()
        return got

    async def receipts(self) -> dict[str, Any]:
        answers = await self.all_clients({"cmd": "receipts"})
        lat: list[int] = []
        for a in answers:
            lat.extend(a["latencies_us"])
        firsts = [a["first_recv_ns"] for a in answers if a["first_recv_ns"]]
        return {
            "received": sum(a["received"] for a in answers),
            "latencies_us": lat,
            "first_recv_ns": min(firsts) if firsts else 0,
            "last_recv_ns": max(a["last_recv_ns"] for a in answers),
            "recoveries": sum(a["recoveries"] for a in answers),
            "recovered_false": sum(a["recovered_false"] for a in answers),
            "last_recovery_ns": max(a["last_recovery_ns"] for a in answers),
        }

    async def status(self) -> dict[str, int]:
        answers = await self.all_clients({"cmd": "status"})
        return {key: sum(a[key] for a in answers) for key in answers[0]}

    async def tally(self) -> dict[str, int]:
        answers = await self.all_clients({"cmd": "tally"})
        return {key: sum(a[key] for a in answers) for key in answers[0]}

    def rss_bytes(self) -> int:
        """The client agents' resident memory (the load's own share of the machine)."""
        total = 0
        for agent in self.clients:
            with contextlib.suppress(OSError):
                total += proc_rss_bytes(agent.proc.pid)
        return total

    async def reset(self) -> None:
        await self.all_clients({"cmd": "reset"})

    async def publish(self, msg: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        """Split an open-loop load over the publisher agents (rate and count divide)."""
        k = len(self.publishers)
        calls = []
        for i, agent in enumerate(self.publishers):
            part = dict(msg, cmd="publish", rate=msg["rate"] / k, seed=msg.get("seed", 1) + i)
            if msg.get("count"):
                part["count"] = msg["count"] // k + (1 if i < msg["count"] % k else 0)
                if not part["count"]:
                    continue
            calls.append(agent.call(part, timeout))
        answers = await asyncio.gather(*calls)
        statuses: dict[str, int] = {}
        for a in answers:
            for key, value in a["statuses"].items():
                statuses[key] = statuses.get(key, 0) + value
        return {
            "posts": sum(a["posts"] for a in answers),
            "statuses": statuses,
            "deliveries_expected": sum(a["deliveries_expected"] for a in answers),
            "send_s": max(a["send_s"] for a in answers),
            "lag_ms": max(a["lag_ms"] for a in answers),
            "http_p50_ms": max((a["http_p50_ms"] or 0) for a in answers),
            "http_p99_ms": max((a["http_p99_ms"] or 0) for a in answers),
        }

    async def stop(self) -> None:
        for agent in [*self.clients, *self.publishers]:
            if agent.proc.returncode is None and agent.proc.stdin is not None:
                try:
                    agent.proc.stdin.write(b'{"cmd":"exit"}\n')
                    await agent.proc.stdin.drain()
                except (ConnectionError, RuntimeError):
                    pass
        for agent in [*self.clients, *self.publishers]:
            try:
                async with asyncio.timeout(10):
                    await agent.proc.wait()
            except TimeoutError:
                agent.proc.kill()
                await agent.proc.wait()


def merge_connect(answers: list[dict[str, Any]]) -> dict[str, Any]:
    refused: dict[str, int] = {}
    for a in answers:
        for key, value in a["refused"].items():
            refused[key] = refused.get(key, 0) + value
    return {
        "connected": sum(a["connected"] for a in answers),
        "refused": refused,
        "elapsed_s": max(a["elapsed_s"] for a in answers),
        "open": sum(a["open"] for a in answers),
    }


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return float(sorted_values[index])
