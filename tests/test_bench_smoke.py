"""A tiny run of the benchmark harness (bench/) so it never rots: a few hundred connections.

Each server is started by the harness itself as a process, driven by the agent processes, and
stopped at the end of the scenario. The full runs are by hand (bench/README.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.scenarios import SCENARIOS, Env, Options
from bench.servers import NODE_DIR

N = 150

pytestmark = pytest.mark.timeout(150)


def _options(tmp_path: Path) -> Options:
    return Options(
        n=[N],
        agents=2,
        publishers=1,
        server_cpus=None,  # CI machines: no pinning, just correctness
        load_cpus=None,
        ping_interval=1.0,
        idle_seconds=2.5,
        fanout_repeat=1,
        targeted_n=N,
        duration=1.0,
        rates=[100.0],
        rates100=[5.0],
        recovery_n=50,
        recovery_k=5,
        batch_size=10,
        batch_rates=[5.0],
        database_url="sqlite",  # a new SQLite file per server start
        log=lambda _: None,
    )


def _servers() -> list[object]:
    node_ok = (NODE_DIR / "node_modules").is_dir() and shutil.which("node") is not None
    return [
        "ref-python",
        "ours",
        pytest.param(
            "ref-node",
            marks=pytest.mark.skipif(not node_ok, reason="bench/node/node_modules absent"),
        ),
    ]


@pytest.mark.parametrize("server", _servers())
async def test_harness_delivers_everything(server: str, tmp_path: Path) -> None:
    env = Env(_options(tmp_path))
    try:
        [hold] = await SCENARIOS["connect-hold"](env, server)
        assert hold["connected"] == N, hold
        assert hold["open_after_idle"] == N and hold["drops"] == 0, hold
        assert hold["pings"] >= N, hold  # every client saw (and answered) a ping

        [fan] = await SCENARIOS["fanout"](env, server)
        assert fan["statuses"] == {"201": 1}, fan
        assert fan["delivered"] == N, fan
        assert fan["last_ms"] > 0 and fan["cpu_us_per_delivery"] >= 0

        # One POST to a topic: a room broadcast for the references, one stored notification
        # per subscriber for ours (every client subscribes over REST first).
        [topic] = await SCENARIOS["fanout-broadcast"](env, server)
        assert topic["statuses"] == {"201": 1}, topic
        assert topic["delivered"] == N, topic

        [one] = await SCENARIOS["targeted"](env, server)
        assert one["posts"] == 100 and one["statuses"] == {"201": 100}, one
        assert one["delivered"] == one["expected"] == 100, one
        assert one["p99_ms"] > 0

        [hundred] = await SCENARIOS["targeted100"](env, server)
        assert hundred["delivered"] == hundred["expected"] == 500, hundred

        [batch] = await SCENARIOS["batch"](env, server)
        if server == "ours":
            assert batch["posts"] == 5 and batch["statuses"] == {"201": 5}, batch
            assert batch["delivered"] == batch["expected"] == 50, batch
        else:
            assert batch["skipped"]

        [rec] = await SCENARIOS["recovery"](env, server)
        if server == "ours":
            assert rec["delivered"] == rec["expected"] == 50 * 5, rec
            assert rec["recovery_events"] == 50 and rec["recovered_false"] == 0, rec
        else:
            assert rec["skipped"]
    finally:
        env.close()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
@pytest.mark.parametrize("server", ["ref-python", "ours"])
async def test_harness_scale_out_over_redis(server: str, tmp_path: Path) -> None:
    """Two server processes over Redis: clients on both, publishing to the first reaches all."""
    opts = _options(tmp_path)
    opts.procs = 2
    opts.fanout_chunk = 50
    env = Env(opts)
    try:
        [fan] = await SCENARIOS["fanout"](env, server)
        assert fan["connected"] == N and fan["delivered"] == N, fan
    finally:
        env.close()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
async def test_scale_scenario_holds_every_connection_and_delivers_each_once(
    tmp_path: Path,
) -> None:
    """The 100k scenario in small: connections over three processes held through two ping
    intervals with no drop, then one notification to every user, each client getting it once."""
    opts = _options(tmp_path)
    opts.procs = 3
    opts.agents = 3
    opts.fanout_chunk = 40  # several POSTs, round-robin over the processes
    env = Env(opts)
    try:
        [row] = await SCENARIOS["scale"](env, "ours")
        assert row["procs"] == 3 and row["connected"] == N and row["refused"] == {}, row
        assert row["open_after_idle"] == N and row["drops"] == 0, row
        assert row["pings"] >= 2 * N, row  # two ping intervals, every client answered
        assert row["statuses"] == {"201": 4}, row
        assert row["delivered"] == N, row
        assert row["tally"] == {"none": 0, "once": N, "more": 0}, row
        assert row["open_at_end"] == N and row["drops_at_end"] == 0, row
    finally:
        env.close()
