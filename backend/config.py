"""Settings: built once from the environment, validated before anything starts."""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .codec import SENDABLE_DEPTH
from .events.mappings import DEFAULT_TOPICS, MappingError, load_mappings
from .redis_url import redact_url
from .redis_url import url_problem as redis_url_problem
from .schemas import MAX_RECEIPT_SEQS

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/notifications.db"
ALLOWED_JWT_ALGORITHMS = frozenset({"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256"})
PLACEHOLDER_SECRETS = frozenset({"changethis", "changeme", "secret", "your-secret", "jwt-secret"})
MIN_SECRET_LENGTH = 32


DAPR_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,255}")


class ConfigError(ValueError):
    """A setting is missing or wrong; the message is one line for the operator."""


class Secret:
    """A string that never shows itself in reprs or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the server; tests build this directly instead of patching os.environ."""

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "INFO"
    # `json`, `text`, or `auto`: JSON unless stderr is a terminal
    log_format: str = "auto"
    # /metrics: a bearer token it requires, and/or a listener of its own (on metrics_host)
    metrics_token: Secret | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # distinct notification types labelled in metrics; the rest count as "other"
    metrics_max_types: int = 50
    auto_migrate: bool = True
    jwt_secret: Secret | None = None
    jwt_public_key: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    dev_mode: bool = False
    cors_allowed_origins: tuple[str, ...] = ()
    redis_url: str | None = None
    # the bus canary: each process hears its own through Redis, or it is deaf (not ready)
    bus_canary_interval_seconds: float = 1.0
    bus_canary_timeout_seconds: float = 3.0
    # the longest wait between tries to subscribe again after the bus failed
    bus_retry_max_seconds: float = 1.0
    # sessions caught up from the database at once after the bus was deaf
    bus_catchup_concurrency: int = 8
    # recipients of a fan-out carried in one bus message (each process delivers its own)
    bus_fanout_chunk: int = 1000
    max_body_bytes: int = 256 * 1024
    # every JSON document from outside (REST body, socket event, CONNECT auth): levels of nesting
    max_json_depth: int = 32
    # a notification's `data`: bytes of its compact JSON encoding
    max_data_bytes: int = 16 * 1024
    idempotency_ttl_hours: float = 24.0
    # POST /notifications/batch: items per request, and recipients of all its items together
    max_batch_items: int = 1000
    max_batch_recipients: int = 10_000
    # SIGTERM to exit, whatever the clients do; in-flight requests that finish in it do
    shutdown_grace_seconds: float = 5.0
    # the longest wait between tries of a background task while the database is away
    db_retry_max_seconds: float = 30.0
    # realtime
    max_connections_per_user: int = 5
    event_rate_per_second: float = 10.0
    event_burst: int = 20
    outbound_rate_per_second: float = 10.0
    max_payload_bytes: int = 64 * 1024
    connects_per_second: int = 500
    websocket_compression: bool = False
    ping_interval_seconds: float = 25.0
    ping_timeout_seconds: float = 20.0
    # an Engine.IO session with no successful Socket.IO CONNECT is closed after this
    connect_timeout_seconds: float = 45.0
    # malformed packets (either protocol layer) a session may send; the last one closes it
    max_malformed_packets: int = 3
    # from connecting (or the last response) to a request's complete headers; also keep-alive
    request_header_timeout_seconds: float = 20.0
    # from a request's headers to its complete body
    request_body_timeout_seconds: float = 30.0
    stale_timeout_seconds: float = 300.0
    # with Redis: a process that stops beating (every fifth of this) leaves the cluster view
    cluster_ttl_seconds: float = 10.0
    cleanup_interval_seconds: float = 60.0
    stats_interval_seconds: float = 300.0
    public_topics: tuple[str, ...] = ()
    recovery_max_notifications: int = 1000
    recovery_page_size: int = 100
    # seqs in one `received` receipt (a socket event or POST /notifications/received)
    receipt_max_seqs: int = 100
    # `pushed` activity steps waiting to be written; past it they are dropped and counted
    activity_queue_max: int = 10000
    # how long the first queued `pushed` step waits for others to share its insert
    activity_flush_seconds: float = 0.1
    # Server-Sent Events (GET /api/v1/notifications/stream)
    sse_heartbeat_seconds: float = 30.0
    sse_max_streams_per_user: int = 3
    sse_ticket_ttl_seconds: float = 30.0
    # events waiting for a stream's reader; a reader this far behind is dropped, not buffered
    sse_max_queued_events: int = 1000
    admin_ui_username: str | None = None
    admin_ui_password: Secret | None = None
    # email
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: Secret | None = None
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_timeout_seconds: float = 10.0
    email_from: str = "Notifications <notifications@localhost>"
    email_outbox_dir: str = "./data/outbox"
    email_worker_enabled: bool = True
    email_poll_seconds: float = 2.0
    email_max_attempts: int = 5
    email_backoff_seconds: float = 30.0
    email_lease_seconds: float = 300.0
    app_url: str = "http://127.0.0.1:8080"
    # signs one-click unsubscribe links; the JWT secret when unset
    unsubscribe_secret: Secret | None = None
    # events from other services (CloudEvents over Dapr pub/sub)
    dapr_pubsub_name: str = "taskflow-pubsub"
    dapr_topics: tuple[str, ...] = DEFAULT_TOPICS
    # when set, a request with this `dapr-api-token` header may post events without a JWT
    dapr_api_token: Secret | None = None
    # a JSON or YAML file of event mappings added to (or replacing) the built-in ones
    event_mappings: str | None = None
    # ingested events older than this are purged from the audit trail; 0 keeps them forever
    events_retention_days: int = 90
    # personal data (README "Data and privacy"); days, 0 keeps them forever
    retention_read_days: int = 365  # read notifications, from read_at
    retention_deleted_days: int = 30  # deleted notifications, from deleted_at
    retention_email_log_days: int = 90  # sent or failed email logs, from created_at
    # the retention task (and an erase's first phase): rows per transaction, the pause between
    # two transactions, and the time between two runs
    retention_batch_size: int = 1000
    retention_batch_pause_seconds: float = 0.1
    retention_interval_seconds: float = 3600.0
    # GET /api/v1/me/export: per user and process, and the rows fetched per query
    exports_per_hour: int = 6
    export_page_size: int = 1000
    # events from Redis: channels (fire-and-forget) and streams (a consumer group, acked after
    # the commit); on INGEST_REDIS_URL, else REDIS_URL
    ingest_redis_url: str | None = None
    ingest_redis_channels: tuple[str, ...] = ()
    ingest_redis_streams: tuple[str, ...] = ()
    ingest_stream_group: str = "notifications"
    # messages per XREADGROUP / XAUTOCLAIM call
    ingest_batch_size: int = 10
    # a pending message idle this long (its consumer died) is claimed by another process
    ingest_claim_idle_seconds: float = 60.0
    # a message claimed after this many deliveries goes to <stream>.dead
    ingest_max_deliveries: int = 5
    # each <stream>.dead is trimmed to about this many entries
    ingest_dead_max_length: int = 10_000
    # the longest wait between tries while Redis or the database is away
    ingest_retry_max_seconds: float = 10.0
    # one process of the cluster consumes each channel, holding a lease this long in Redis,
    # renewed every third of it; a holder that died is replaced within about this time
    ingest_channel_lease_seconds: float = 5.0
    # API keys for services: keyed hash (HMAC-SHA256) secret; JWT_SECRET when unset
    api_key_secret: Secret | None = None
    # keys not revoked, at most; topics and user prefixes per key, each at most
    api_keys_max: int = 1000
    api_key_max_rules: int = 100
    # last_used_at is written at most once per key and process in this interval
    api_key_touch_seconds: float = 60.0
    # templates: how many, each field's source size and rendered size (characters)
    templates_max: int = 1000
    template_max_chars: int = 16 * 1024
    template_max_output_chars: int = 64 * 1024

    @property
    def ingest_url(self) -> str | None:
        """Where channels and streams are read: INGEST_REDIS_URL, else REDIS_URL."""
        return self.ingest_redis_url or self.redis_url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        database = make_url(self.database_url).database
        if not database or database == ":memory:":
            return None
        return Path(database)

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _int(name: str, raw: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"{name} must be {bound}, got {value}")
    return value


def _float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


_INT_SETTINGS = {
    "MAX_BODY_BYTES": "max_body_bytes",
    "MAX_DATA_BYTES": "max_data_bytes",
    "MAX_BATCH_ITEMS": "max_batch_items",
    "MAX_BATCH_RECIPIENTS": "max_batch_recipients",
    "MAX_CONNECTIONS_PER_USER": "max_connections_per_user",
    "EVENT_BURST": "event_burst",
    "MAX_PAYLOAD_BYTES": "max_payload_bytes",
    "CONNECTS_PER_SECOND": "connects_per_second",
    "RECOVERY_MAX_NOTIFICATIONS": "recovery_max_notifications",
    "RECOVERY_PAGE_SIZE": "recovery_page_size",
    "RECEIPT_MAX_SEQS": "receipt_max_seqs",
    "ACTIVITY_QUEUE_MAX": "activity_queue_max",
    "EMAIL_MAX_ATTEMPTS": "email_max_attempts",
    "MAX_MALFORMED_PACKETS": "max_malformed_packets",
    "SSE_MAX_STREAMS_PER_USER": "sse_max_streams_per_user",
    "SSE_MAX_QUEUED_EVENTS": "sse_max_queued_events",
    "BUS_CATCHUP_CONCURRENCY": "bus_catchup_concurrency",
    "BUS_FANOUT_CHUNK": "bus_fanout_chunk",
    "INGEST_BATCH_SIZE": "ingest_batch_size",
    "INGEST_MAX_DELIVERIES": "ingest_max_deliveries",
    "INGEST_DEAD_MAX_LENGTH": "ingest_dead_max_length",
    "EXPORTS_PER_HOUR": "exports_per_hour",
    "API_KEYS_MAX": "api_keys_max",
    "API_KEY_MAX_RULES": "api_key_max_rules",
    "TEMPLATES_MAX": "templates_max",
    "TEMPLATE_MAX_CHARS": "template_max_chars",
    "TEMPLATE_MAX_OUTPUT_CHARS": "template_max_output_chars",
}
_FLOAT_SETTINGS = {
    "EVENT_RATE_PER_SECOND": "event_rate_per_second",
    "OUTBOUND_RATE_PER_SECOND": "outbound_rate_per_second",
    "STALE_TIMEOUT_SECONDS": "stale_timeout_seconds",
    "CLUSTER_TTL_SECONDS": "cluster_ttl_seconds",
    "PING_INTERVAL_SECONDS": "ping_interval_seconds",
    "PING_TIMEOUT_SECONDS": "ping_timeout_seconds",
    "CLEANUP_INTERVAL_SECONDS": "cleanup_interval_seconds",
    "STATS_INTERVAL_SECONDS": "stats_interval_seconds",
    "SMTP_TIMEOUT_SECONDS": "smtp_timeout_seconds",
    "EMAIL_POLL_SECONDS": "email_poll_seconds",
    "IDEMPOTENCY_TTL_HOURS": "idempotency_ttl_hours",
    "EMAIL_BACKOFF_SECONDS": "email_backoff_seconds",
    "EMAIL_LEASE_SECONDS": "email_lease_seconds",
    "SHUTDOWN_GRACE_SECONDS": "shutdown_grace_seconds",
    "DB_RETRY_MAX_SECONDS": "db_retry_max_seconds",
    "CONNECT_TIMEOUT_SECONDS": "connect_timeout_seconds",
    "REQUEST_HEADER_TIMEOUT_SECONDS": "request_header_timeout_seconds",
    "REQUEST_BODY_TIMEOUT_SECONDS": "request_body_timeout_seconds",
    "SSE_HEARTBEAT_SECONDS": "sse_heartbeat_seconds",
    "SSE_TICKET_TTL_SECONDS": "sse_ticket_ttl_seconds",
    "BUS_CANARY_INTERVAL_SECONDS": "bus_canary_interval_seconds",
    "BUS_CANARY_TIMEOUT_SECONDS": "bus_canary_timeout_seconds",
    "BUS_RETRY_MAX_SECONDS": "bus_retry_max_seconds",
    "INGEST_CLAIM_IDLE_SECONDS": "ingest_claim_idle_seconds",
    "INGEST_RETRY_MAX_SECONDS": "ingest_retry_max_seconds",
    "INGEST_CHANNEL_LEASE_SECONDS": "ingest_channel_lease_seconds",
    "RETENTION_BATCH_PAUSE_SECONDS": "retention_batch_pause_seconds",
    "RETENTION_INTERVAL_SECONDS": "retention_interval_seconds",
    "API_KEY_TOUCH_SECONDS": "api_key_touch_seconds",
    "ACTIVITY_FLUSH_SECONDS": "activity_flush_seconds",
}
_BOOL_SETTINGS = {
    "AUTO_MIGRATE": "auto_migrate",
    "WEBSOCKET_COMPRESSION": "websocket_compression",
    "SMTP_STARTTLS": "smtp_starttls",
    "SMTP_TLS": "smtp_tls",
    "EMAIL_WORKER_ENABLED": "email_worker_enabled",
}
_STR_SETTINGS = {
    "JWT_AUDIENCE": "jwt_audience",
    "JWT_ISSUER": "jwt_issuer",
    "REDIS_URL": "redis_url",
    "SMTP_HOST": "smtp_host",
    "SMTP_USERNAME": "smtp_username",
    "EMAIL_FROM": "email_from",
    "EMAIL_OUTBOX_DIR": "email_outbox_dir",
    "APP_URL": "app_url",
    "ADMIN_UI_USERNAME": "admin_ui_username",
    "DAPR_PUBSUB_NAME": "dapr_pubsub_name",
    "EVENT_MAPPINGS": "event_mappings",
    "INGEST_REDIS_URL": "ingest_redis_url",
    "INGEST_STREAM_GROUP": "ingest_stream_group",
}


def load_settings(
    environ: Mapping[str, str] | None = None, *, create_secret: bool = True
) -> Settings:
    """Read and validate the environment; raise ConfigError with a one-line reason.

    `create_secret=False` (the `token` command) refuses to generate the embedded default's
    secret: a token signed with a secret no server uses would be refused with no clue why.
    """
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}

    database_url = env.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise ConfigError(f"DATABASE_URL is not a database URL: {database_url!r}") from None
    if url.drivername not in {"sqlite+aiosqlite", "postgresql+asyncpg"}:
        raise ConfigError(
            "DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://, "
            f"got {url.drivername}://"
        )
    values["database_url"] = database_url

    if "HOST" in env:
        values["host"] = env["HOST"].strip() or "127.0.0.1"
    if "PORT" in env:
        values["port"] = _int("PORT", env["PORT"], minimum=0, maximum=65535)
    if "SMTP_PORT" in env:
        values["smtp_port"] = _int("SMTP_PORT", env["SMTP_PORT"], minimum=1, maximum=65535)
    level = env.get("LOG_LEVEL", "INFO").strip().upper()
    if level not in logging.getLevelNamesMapping():
        raise ConfigError(f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got {level!r}")
    values["log_level"] = level
    log_format = env.get("LOG_FORMAT", "auto").strip().lower() or "auto"
    if log_format not in {"auto", "json", "text"}:
        raise ConfigError(f"LOG_FORMAT must be json, text or auto, got {log_format!r}")
    values["log_format"] = log_format
    if env.get("METRICS_PORT", "").strip():
        values["metrics_port"] = _int("METRICS_PORT", env["METRICS_PORT"], minimum=1, maximum=65535)
    if env.get("METRICS_HOST", "").strip():
        values["metrics_host"] = env["METRICS_HOST"].strip()
    if env.get("METRICS_MAX_TYPES", "").strip():
        values["metrics_max_types"] = _int(
            "METRICS_MAX_TYPES", env["METRICS_MAX_TYPES"], minimum=1, maximum=1000
        )

    for var, attr in _INT_SETTINGS.items():
        if env.get(var, "").strip():
            values[attr] = _int(var, env[var], minimum=1)
    if env.get("MAX_JSON_DEPTH", "").strip():
        values["max_json_depth"] = _int(
            "MAX_JSON_DEPTH", env["MAX_JSON_DEPTH"], minimum=2, maximum=SENDABLE_DEPTH
        )
    for var, attr in _FLOAT_SETTINGS.items():
        if env.get(var, "").strip():
            values[attr] = _float(var, env[var])
    for var, attr in _BOOL_SETTINGS.items():
        if env.get(var, "").strip():
            values[attr] = _bool(var, env[var])
    for var, attr in _STR_SETTINGS.items():
        if env.get(var, "").strip():
            values[attr] = env[var].strip()
    for var, attr in (
        ("SMTP_PASSWORD", "smtp_password"),
        ("ADMIN_UI_PASSWORD", "admin_ui_password"),
        ("UNSUBSCRIBE_SECRET", "unsubscribe_secret"),
        ("DAPR_API_TOKEN", "dapr_api_token"),
        ("METRICS_TOKEN", "metrics_token"),
        ("API_KEY_SECRET", "api_key_secret"),
    ):
        if env.get(var):
            values[attr] = Secret(env[var])
    if env.get("CORS_ALLOWED_ORIGINS", "").strip():
        values["cors_allowed_origins"] = _list(env["CORS_ALLOWED_ORIGINS"])
    if env.get("DAPR_TOPICS", "").strip():
        values["dapr_topics"] = _list(env["DAPR_TOPICS"])
    for var, attr in (
        ("EVENTS_RETENTION_DAYS", "events_retention_days"),
        ("RETENTION_READ_DAYS", "retention_read_days"),
        ("RETENTION_DELETED_DAYS", "retention_deleted_days"),
        ("RETENTION_EMAIL_LOG_DAYS", "retention_email_log_days"),
    ):
        if env.get(var, "").strip():  # empty: the default; 0: kept forever
            values[attr] = _int(var, env[var], minimum=0, maximum=36500)
    for var, attr in (
        ("RETENTION_BATCH_SIZE", "retention_batch_size"),
        ("EXPORT_PAGE_SIZE", "export_page_size"),
    ):
        if env.get(var, "").strip():  # one statement's IN list and one page in memory
            values[attr] = _int(var, env[var], minimum=1, maximum=10_000)
    for var, attr in (
        ("INGEST_REDIS_CHANNELS", "ingest_redis_channels"),
        ("INGEST_REDIS_STREAMS", "ingest_redis_streams"),
    ):
        if env.get(var, "").strip():
            values[attr] = _list(env[var])
    if env.get("PUBLIC_TOPICS", "").strip():
        values["public_topics"] = _list(env["PUBLIC_TOPICS"])

    if env.get("JWT_ALGORITHMS", "").strip():
        values["jwt_algorithms"] = _list(env["JWT_ALGORITHMS"])
    if env.get("JWT_SECRET"):
        values["jwt_secret"] = Secret(env["JWT_SECRET"])
    public_key = env.get("JWT_PUBLIC_KEY", "").strip()
    if public_key.startswith("@"):
        try:
            public_key = Path(public_key[1:]).read_text()
        except OSError as exc:
            raise ConfigError(f"JWT_PUBLIC_KEY file cannot be read: {exc.strerror}") from None
    if public_key:
        values["jwt_public_key"] = public_key.replace("\\n", "\n")

    settings = Settings(**values)
    if settings.jwt_secret is None and settings.jwt_public_key is None:
        settings = _with_embedded_secret(settings, create=create_secret)
    validate(settings)
    return settings


def _with_embedded_secret(settings: Settings, *, create: bool = True) -> Settings:
    """On the embedded default, generate a secret once and keep it beside the database."""
    path = settings.sqlite_path
    if path is None:
        raise ConfigError(
            "JWT_SECRET or JWT_PUBLIC_KEY is required unless DATABASE_URL is a SQLite file"
        )
    secret_file = path.with_name(path.name + ".jwt-secret")
    try:
        if secret_file.exists():
            secret = secret_file.read_text().strip()
        elif not create:
            raise ConfigError(
                f"no server secret at {secret_file.resolve()}: start the server once "
                "(python -m backend) from the folder that holds its data/, or point "
                "DATABASE_URL at that database, or set JWT_SECRET"
            )
        else:
            secret_file.parent.mkdir(parents=True, exist_ok=True)
            secret = secrets.token_urlsafe(48)
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secret + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot keep the generated JWT secret at {secret_file}: {exc}") from None
    cors = settings.cors_allowed_origins or ("*",)
    return replace(
        settings,
        jwt_secret=Secret(secret),
        jwt_algorithms=("HS256",),
        dev_mode=True,
        cors_allowed_origins=cors,
    )


def validate(settings: Settings) -> None:
    """Fail fast on values that would only break later."""
    if settings.metrics_token is not None and len(settings.metrics_token.get()) < 16:
        raise ConfigError("METRICS_TOKEN must be at least 16 characters")
    if settings.metrics_port is not None and settings.metrics_port == settings.port:
        raise ConfigError("METRICS_PORT must differ from PORT")
    unknown = set(settings.jwt_algorithms) - ALLOWED_JWT_ALGORITHMS
    if unknown or not settings.jwt_algorithms:
        raise ConfigError(
            f"JWT_ALGORITHMS must be a subset of {sorted(ALLOWED_JWT_ALGORITHMS)}, "
            f"got {sorted(unknown) or 'nothing'}"
        )
    symmetric = {a for a in settings.jwt_algorithms if a.startswith("HS")}
    if symmetric and symmetric != set(settings.jwt_algorithms):
        raise ConfigError("JWT_ALGORITHMS must not mix HS* with RS*/ES* algorithms")
    if symmetric:
        if settings.jwt_secret is None:
            raise ConfigError("JWT_SECRET is required for HS* algorithms")
        secret = settings.jwt_secret.get()
        if secret.lower() in PLACEHOLDER_SECRETS:
            raise ConfigError("JWT_SECRET is a placeholder; set a random secret")
        if len(secret) < MIN_SECRET_LENGTH:
            raise ConfigError(f"JWT_SECRET must be at least {MIN_SECRET_LENGTH} characters")
    elif not settings.jwt_public_key:
        raise ConfigError("JWT_PUBLIC_KEY is required for RS*/ES* algorithms")
    if settings.redis_url and (problem := redis_url_problem(settings.redis_url)):
        raise ConfigError(f"REDIS_URL {problem}, got {redact_url(settings.redis_url)!r}")
    if settings.bus_canary_timeout_seconds < 2 * settings.bus_canary_interval_seconds:
        # one late canary must not make a healthy process look deaf
        raise ConfigError(
            "BUS_CANARY_TIMEOUT_SECONDS must be at least twice BUS_CANARY_INTERVAL_SECONDS"
        )
    if settings.bus_catchup_concurrency < 1:
        raise ConfigError("BUS_CATCHUP_CONCURRENCY must be at least 1")
    if not 1 <= settings.bus_fanout_chunk <= 100_000:
        raise ConfigError("BUS_FANOUT_CHUNK must be from 1 to 100000")
    _validate_ingest(settings)
    if not settings.app_url.startswith(("http://", "https://")):
        raise ConfigError(f"APP_URL must start with http:// or https://, got {settings.app_url!r}")
    for origin in settings.cors_allowed_origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ConfigError(f"CORS_ALLOWED_ORIGINS has an invalid origin: {origin!r}")
    if settings.admin_ui_username and settings.admin_ui_password is None:
        raise ConfigError("ADMIN_UI_PASSWORD is required when ADMIN_UI_USERNAME is set")
    if settings.email_lease_seconds <= 2 * settings.smtp_timeout_seconds:
        # a slow but live send must never look like a dead worker (and be sent twice)
        raise ConfigError("EMAIL_LEASE_SECONDS must be more than twice SMTP_TIMEOUT_SECONDS")
    if not 2 <= settings.max_json_depth <= SENDABLE_DEPTH:
        # a publish body with `data` is 2 levels; past SENDABLE_DEPTH, data could not be sent
        raise ConfigError(f"MAX_JSON_DEPTH must be between 2 and {SENDABLE_DEPTH}")
    if settings.ping_interval_seconds < 1 or not float(settings.ping_interval_seconds).is_integer():
        # Engine.IO advertises whole seconds (python-engineio truncates 0.3 to 0): clients would
        # expect pings that never come on time and drop every session.
        raise ConfigError(
            "PING_INTERVAL_SECONDS must be a whole number of seconds, at least 1, "
            f"got {settings.ping_interval_seconds:g}"
        )
    for topic in settings.dapr_topics:
        if not DAPR_NAME.fullmatch(topic):
            raise ConfigError(f"DAPR_TOPICS has an invalid topic name: {topic!r}")
    if not DAPR_NAME.fullmatch(settings.dapr_pubsub_name):
        raise ConfigError(f"DAPR_PUBSUB_NAME is not a valid name: {settings.dapr_pubsub_name!r}")
    try:
        load_mappings(settings.event_mappings)
    except MappingError as exc:
        raise ConfigError(f"EVENT_MAPPINGS {exc}") from None
    if settings.api_key_max_rules > 1000:
        raise ConfigError("API_KEY_MAX_RULES must be at most 1000 (the request schema's bound)")
    if settings.api_key_secret and len(settings.api_key_secret.get()) < MIN_SECRET_LENGTH:
        raise ConfigError(f"API_KEY_SECRET must be at least {MIN_SECRET_LENGTH} characters")
    if settings.unsubscribe_secret and len(settings.unsubscribe_secret.get()) < MIN_SECRET_LENGTH:
        raise ConfigError(f"UNSUBSCRIBE_SECRET must be at least {MIN_SECRET_LENGTH} characters")
    if settings.sse_heartbeat_seconds >= settings.stale_timeout_seconds:
        # each ping counts as the stream's heartbeat: a live stream must never look stale
        raise ConfigError("SSE_HEARTBEAT_SECONDS must be less than STALE_TIMEOUT_SECONDS")
    if settings.sse_max_queued_events < settings.recovery_page_size:
        # a recovery page is queued in one piece before the reader gets to it
        raise ConfigError("SSE_MAX_QUEUED_EVENTS must be at least RECOVERY_PAGE_SIZE")
    if not 1 <= settings.receipt_max_seqs <= MAX_RECEIPT_SEQS:
        # the wire schema's own bound: one receipt is one UPDATE ... IN (...)
        raise ConfigError(f"RECEIPT_MAX_SEQS must be between 1 and {MAX_RECEIPT_SEQS}")


# INGEST_CHANNEL_LEASE_SECONDS bounds: renewals every third of it; a dead holder's channel is
# deaf for up to the lease.
MIN_CHANNEL_LEASE_SECONDS = 1.0
MAX_CHANNEL_LEASE_SECONDS = 300.0

# A Redis channel or stream name: printable, no spaces or commas (the lists are comma-separated).
REDIS_NAME = re.compile(r"[!-+\--~]{1,200}")


def _validate_ingest(settings: Settings) -> None:
    url = settings.ingest_redis_url
    if url and (problem := redis_url_problem(url)):
        raise ConfigError(f"INGEST_REDIS_URL {problem}, got {redact_url(url)!r}")
    named = settings.ingest_redis_channels or settings.ingest_redis_streams
    if named and not settings.ingest_url:
        raise ConfigError(
            "INGEST_REDIS_CHANNELS and INGEST_REDIS_STREAMS need INGEST_REDIS_URL or REDIS_URL"
        )
    for var, names in (
        ("INGEST_REDIS_CHANNELS", settings.ingest_redis_channels),
        ("INGEST_REDIS_STREAMS", settings.ingest_redis_streams),
    ):
        for name in names:
            if not REDIS_NAME.fullmatch(name):
                raise ConfigError(f"{var} has an invalid name: {name!r}")
    group = settings.ingest_stream_group
    if not REDIS_NAME.fullmatch(group):
        raise ConfigError(f"INGEST_STREAM_GROUP is not a valid name: {group!r}")
    if settings.ingest_batch_size > 1000:
        raise ConfigError(
            f"INGEST_BATCH_SIZE must be at most 1000, got {settings.ingest_batch_size}"
        )
    lease = settings.ingest_channel_lease_seconds
    if not MIN_CHANNEL_LEASE_SECONDS <= lease <= MAX_CHANNEL_LEASE_SECONDS:
        # renewed every third of it: a round trip to Redis must fit with room to spare
        raise ConfigError(
            f"INGEST_CHANNEL_LEASE_SECONDS must be between {MIN_CHANNEL_LEASE_SECONDS:g} and "
            f"{MAX_CHANNEL_LEASE_SECONDS:g}, got {lease:g}"
        )
    if settings.ingest_max_deliveries < 2:
        # one delivery is the first read: a message must survive one crash at least
        raise ConfigError("INGEST_MAX_DELIVERIES must be at least 2")
