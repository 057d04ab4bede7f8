"""`python -m bench <scenario|all> --server ours|ref-python|ref-python-frozen|ref-node|all`.

Examples:
    python -m bench connect-hold --server all --n 1000,5000,10000
    python -m bench fanout --server ref-node --n 10000
    python -m bench targeted --server ours --rates 500,1000,2000 --duration 5
    python -m bench all --server all --n 1000 --ping-interval 5

Results go to stdout (a line per measurement, then a summary) and, as JSON, to
bench/results/<UTC time>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from .scenarios import SCENARIOS, Env, Options
from .servers import BENCH, NODE_DIR, SERVERS

DEFAULT_SERVERS = ("ours", "ref-python", "ref-node")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def parse(argv: list[str]) -> tuple[argparse.Namespace, Options]:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("scenario", choices=[*SCENARIOS, "all"])
    p.add_argument(
        "--server",
        default="all",
        help=f"comma-separated, of {', '.join(SERVERS)}; all = {','.join(DEFAULT_SERVERS)}",
    )
    p.add_argument("--n", type=_ints, default=[1000], help="connections, e.g. 1000,5000,10000")
    p.add_argument("--agents", type=int, default=4, help="client processes (one source IP each)")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--server-cpus", default="0", help="taskset list for the server ('' = none)")
    p.add_argument("--load-cpus", default="1", help="taskset list for the agents ('' = none)")
    p.add_argument("--db-cpus", default="", help="taskset list for PostgreSQL ('' = none)")
    p.add_argument(
        "--pg-fsync-off",
        action="store_true",
        help="PostgreSQL without fsync and synchronous_commit (default: durable, as production)",
    )
    p.add_argument("--ping-interval", type=float, default=25.0)
    p.add_argument("--idle-seconds", type=float, default=None, help="default 2 ping intervals")
    p.add_argument("--fanout-repeat", type=int, default=3)
    p.add_argument("--fanout-chunk", type=int, default=1000, help="recipients per fan-out POST")
    p.add_argument("--targeted-n", type=int, default=1000, help="users for the rate ladders")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per rate step")
    p.add_argument("--rates", type=_floats, default=None, help="POST/s, single recipient")
    p.add_argument("--rates100", type=_floats, default=None, help="POST/s, 100 recipients")
    p.add_argument("--recovery-n", type=int, default=1000)
    p.add_argument("--recovery-k", type=int, default=50)
    p.add_argument("--compress", action="store_true", help="offer permessage-deflate")
    p.add_argument("--procs", type=int, default=1, help="server processes (>1: over Redis)")
    p.add_argument(
        "--spread-posts",
        action="store_true",
        help="targeted/targeted100: POSTs round-robin over the --procs processes, not the first",
    )
    p.add_argument(
        "--database-url",
        default=None,
        help="ours: use this DB instead of a new PG; `sqlite`: a new SQLite file per server",
    )
    p.add_argument("--batch-size", type=int, default=100, help="items per batch POST")
    p.add_argument("--batch-rates", type=_floats, default=None, help="batch POSTs/s")
    p.add_argument("--max-seconds", type=float, default=3600, help="the whole run's bound")
    p.add_argument("--json", type=Path, default=None, help="where to write the results")
    args = p.parse_args(argv)
    opts = Options(
        n=args.n,
        agents=args.agents,
        publishers=args.publishers,
        server_cpus=args.server_cpus or None,
        load_cpus=args.load_cpus or None,
        db_cpus=args.db_cpus or None,
        pg_fsync_off=args.pg_fsync_off,
        ping_interval=args.ping_interval,
        idle_seconds=args.idle_seconds,
        fanout_repeat=args.fanout_repeat,
        fanout_chunk=args.fanout_chunk,
        targeted_n=args.targeted_n,
        duration=args.duration,
        recovery_n=args.recovery_n,
        recovery_k=args.recovery_k,
        database_url=args.database_url,
        procs=args.procs,
        spread_posts=args.spread_posts,
        compress=args.compress,
    )
    if args.rates:
        opts.rates = args.rates
    if args.rates100:
        opts.rates100 = args.rates100
    opts.batch_size = args.batch_size
    if args.batch_rates:
        opts.batch_rates = args.batch_rates
    return args, opts


def servers_of(text: str) -> list[str]:
    names = list(DEFAULT_SERVERS) if text == "all" else [s.strip() for s in text.split(",")]
    for name in names:
        if name not in SERVERS:
            raise SystemExit(f"unknown server {name!r}; one of {', '.join(SERVERS)}")
    return names


async def run(scenarios: list[str], servers: list[str], opts: Options) -> list[dict[str, Any]]:
    env = Env(opts)
    rows: list[dict[str, Any]] = []
    try:
        for scenario in scenarios:
            for server in servers:
                if server == "ref-node" and not (NODE_DIR / "node_modules").is_dir():
                    opts.log("skip ref-node: run `npm ci` in bench/node first")
                    continue
                opts.log(f"== {scenario} on {server}")
                try:
                    rows.extend(await SCENARIOS[scenario](env, server))
                except Exception as exc:  # one server failing must not lose the others
                    opts.log(f"  FAILED: {type(exc).__name__}: {exc}")
                    rows.append({"scenario": scenario, "server": server, "error": repr(exc)})
    finally:
        await asyncio.to_thread(env.close)
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    keys = ("connects_per_s", "rss_per_conn_kb", "idle_cpu_pct", "drops", "last_ms",
            "deliveries_per_cpu_s", "cpu_us_per_delivery", "rate_posts_s", "p50_ms", "p99_ms",
            "delivered", "expected", "seconds", "max_rate_p99_ok", "skipped", "error")  # fmt: skip
    lines = []
    for r in rows:
        fields = " ".join(f"{k}={r[k]}" for k in keys if k in r)
        lines.append(f"{r['scenario']:<17} {r['server']:<18} n={r.get('n', '-'):<6} {fields}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args, opts = parse(sys.argv[1:] if argv is None else argv)
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    servers = servers_of(args.server)
    started = time.time()
    rows = asyncio.run(asyncio.wait_for(run(scenarios, servers, opts), args.max_seconds))
    print("\n" + summary(rows))
    out = args.json or BENCH / "results" / time.strftime("%Y%m%d-%H%M%S.json", time.gmtime())
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"argv": sys.argv, "started": started, "seconds": round(time.time() - started, 1)}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"results: {out}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
