"""cloud.toml: load and validate the broker's configuration.

Strategy: parse with tomllib into frozen dataclasses and validate everything up front, so
a mistake fails at start with the key that is wrong (``topics.telemetry.partitions: must
be an integer >= 1``) instead of on the first request. Names that become directory names
(topics) are checked against the same safe pattern the protocol uses for edge ids.

Example::

    data_dir = "/var/lib/cloud-broker"
    listen = "0.0.0.0:8080"
    max_body_bytes = 8388608
    max_decompressed_bytes = 16777216   # optional: ingest bodies after decompression
    max_records_per_request = 10000     # optional: records per ingest/replicate request
    retention_check_ms = 30000      # optional: how often topic retention is applied

    [tls]                      # optional
    cert = "/etc/cloud-broker/cert.pem"
    key = "/etc/cloud-broker/key.pem"

    [limits]                   # optional: connection limits (docs/deploy.md)
    max_connections = 1000     # open connections; an idle one is closed to admit a new one
    header_timeout_s = 10      # a request's headers must arrive within this time
    keep_alive_s = 5           # idle time between requests before the connection is closed
    max_header_bytes = 65536   # request line and headers

    [topics.telemetry]
    partitions = 8
    retention_bytes = 10737418240   # optional, per partition
    retention_ms = 604800000        # optional

    max_topics = 100                # topics the broker may hold (auto-creation stops there)

    [[tokens]]
    token = "s3cret-edge-1"
    edge_id = "gw-001"              # the edge this token may ingest as ("*": any edge)
    permissions = ["ingest"]        # ingest, read, admin
    topics = ["telemetry"]          # optional fnmatch patterns (default ["*"]: every topic)
    groups = ["dash-*"]             # optional fnmatch patterns (default ["*"]: every group)

    [auth]
    tokens_db = "/var/lib/cloud-broker/tokens.db"   # optional SQLite table of tokens
    required = true                 # false: no tokens checked (local demos only)

    [mirrors.dr]                    # optional, see cloud_broker/mirrors/settings.py and
    topic = "telemetry"             # docs/mirrors.md (targets: broker, nats, sql)
    target = "nats"
    servers = ["nats://127.0.0.1:4222"]
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uplink import is_safe_name

from .redact import mask_secrets

PERMISSIONS = frozenset({"ingest", "read", "admin"})
DEFAULT_MAX_TOPICS = 100
MAX_SCOPE_PATTERNS = 256


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        # Masked: the message may echo a URL with credentials (cloud_broker/redact.py).
        super().__init__(f"{key}: {mask_secrets(message)}")
        self.key = key


@dataclass(frozen=True, slots=True)
class TopicConfig:
    name: str
    partitions: int
    retention_bytes: int | None = None
    retention_ms: int | None = None
    segment_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TokenConfig:
    token: str
    edge_id: str  # "*" = any edge
    permissions: frozenset[str]
    topics: tuple[str, ...] = ("*",)  # fnmatch patterns: the topics it may use
    groups: tuple[str, ...] = ("*",)  # fnmatch patterns: the consumer groups it may use


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """``[limits]``: what one HTTP connection may hold (cloud_broker/connguard.py)."""

    max_connections: int = 1000
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_header_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    topics: dict[str, TopicConfig] = field(default_factory=dict)
    tokens: tuple[TokenConfig, ...] = ()
    tokens_db: Path | None = None
    auth_required: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    #: decompressed size of an ingest body; None: twice max_body_bytes
    max_decompressed_bytes: int | None = None
    #: records one ingest request may hold (the edge's max_batch_records must not exceed it)
    max_records_per_request: int = 10_000
    #: group commit window for partitions (ms); requests arriving together share fsyncs
    commit_interval_ms: float = 1.0
    #: how often the ingest dedup state is checkpointed (ms); it is a hint, rebuilt from data
    state_checkpoint_ms: int = 1000
    #: create a topic on first ingest with this many partitions (0: unknown topics are refused)
    auto_create_partitions: int = 0
    #: topics the broker may hold: creating one more (auto-creation) is refused
    max_topics: int = DEFAULT_MAX_TOPICS
    #: how often retention (retention_bytes / retention_ms of each topic) is applied (ms)
    retention_check_ms: int = 30_000
    #: [mirrors.<name>] tables: cloud_broker.mirrors.settings.MirrorConfig by name
    mirrors: dict[str, Any] = field(default_factory=dict)
    #: [limits]: connection cap and timeouts
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    #: [auth] protect_metrics: /metrics, /openapi.json and /healthz detail need a read token
    protect_metrics: bool = False


def _int(d: dict[str, Any], key: str, path: str, default: int | None, minimum: int) -> int | None:
    v = d.get(key, default)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ConfigError(f"{path}{key}", f"must be an integer >= {minimum}, got {v!r}")
    return v


def _known(d: dict[str, Any], keys: set[str], path: str) -> None:
    for k in d:
        if k not in keys:
            raise ConfigError(f"{path}{k}", "unknown key")


def parse_config(raw: dict[str, Any], base_dir: Path | None = None) -> BrokerConfig:
    """Validate a parsed TOML document; relative paths are taken from ``base_dir``."""
    base_dir = base_dir or Path.cwd()
    _known(raw, {"data_dir", "listen", "max_body_bytes", "tls", "topics", "tokens", "auth",
                 "commit_interval_ms", "state_checkpoint_ms", "auto_create_partitions",
                 "mirrors", "retention_check_ms", "max_decompressed_bytes",
                 "max_records_per_request", "max_topics", "limits"}, "")

    def path_of(key: str, v: Any) -> Path:
        if not isinstance(v, str) or not v:
            raise ConfigError(key, f"must be a non-empty path string, got {v!r}")
        p = Path(os.path.expanduser(v))
        return p if p.is_absolute() else base_dir / p

    if "data_dir" not in raw:
        raise ConfigError("data_dir", "is required")
    data_dir = path_of("data_dir", raw["data_dir"])
    from .netaddr import parse_listen  # late: it imports ConfigError from here

    host, port = parse_listen(raw.get("listen", "127.0.0.1:8080"), "listen")

    topics: dict[str, TopicConfig] = {}
    raw_topics = raw.get("topics", {})
    if not isinstance(raw_topics, dict):
        raise ConfigError("topics", "must be a table of topics")
    for name, t in raw_topics.items():
        path = f"topics.{name}."
        if not is_safe_name(name):
            raise ConfigError(f"topics.{name}", "topic names must match [A-Za-z0-9][A-Za-z0-9._-]*")
        if not isinstance(t, dict):
            raise ConfigError(f"topics.{name}", "must be a table")
        _known(t, {"partitions", "retention_bytes", "retention_ms", "segment_bytes"}, path)
        topics[name] = TopicConfig(
            name=name,
            partitions=_int(t, "partitions", path, 1, 1) or 1,
            retention_bytes=_int(t, "retention_bytes", path, None, 1),
            retention_ms=_int(t, "retention_ms", path, None, 1),
            segment_bytes=_int(t, "segment_bytes", path, 64 * 1024 * 1024, 4096) or 0,
        )

    tokens: list[TokenConfig] = []
    raw_tokens = raw.get("tokens", [])
    if not isinstance(raw_tokens, list):
        raise ConfigError("tokens", "must be an array of tables ([[tokens]])")
    for i, t in enumerate(raw_tokens):
        path = f"tokens[{i}]."
        if not isinstance(t, dict):
            raise ConfigError(f"tokens[{i}]", "must be a table")
        _known(t, {"token", "edge_id", "permissions", "topics", "groups"}, path)
        tok = t.get("token")
        if not isinstance(tok, str) or len(tok) < 8:
            raise ConfigError(path + "token", "must be a string of at least 8 characters")
        edge = t.get("edge_id", "*")
        if edge != "*" and (not isinstance(edge, str) or not is_safe_name(edge)):
            raise ConfigError(path + "edge_id", f"must be '*' or a safe name, got {edge!r}")
        perms = t.get("permissions", ["ingest"])
        if not isinstance(perms, list) or not set(perms) <= PERMISSIONS:
            allowed = sorted(PERMISSIONS)
            raise ConfigError(path + "permissions", f"must be a list drawn from {allowed}")
        tokens.append(TokenConfig(tok, edge, frozenset(perms), _scope(t, "topics", path),
                                  _scope(t, "groups", path)))

    auth = raw.get("auth", {})
    if not isinstance(auth, dict):
        raise ConfigError("auth", "must be a table")
    _known(auth, {"tokens_db", "required", "protect_metrics"}, "auth.")
    required = auth.get("required", True)
    if not isinstance(required, bool):
        raise ConfigError("auth.required", "must be true or false")
    protect_metrics = auth.get("protect_metrics", False)
    if not isinstance(protect_metrics, bool):
        raise ConfigError("auth.protect_metrics", "must be true or false")
    tokens_db = path_of("auth.tokens_db", auth["tokens_db"]) if "tokens_db" in auth else None

    tls = raw.get("tls")
    cert = key = None
    if tls is not None:
        if not isinstance(tls, dict):
            raise ConfigError("tls", "must be a table with cert and key")
        _known(tls, {"cert", "key"}, "tls.")
        for k in ("cert", "key"):
            if k not in tls:
                raise ConfigError(f"tls.{k}", "is required when [tls] is present")
        cert, key = path_of("tls.cert", tls["cert"]), path_of("tls.key", tls["key"])

    max_topics = _int(raw, "max_topics", "", DEFAULT_MAX_TOPICS, 1) or DEFAULT_MAX_TOPICS
    if len(topics) > max_topics:
        raise ConfigError("max_topics", f"is {max_topics} but {len(topics)} topics are "
                          "configured")

    interval = raw.get("commit_interval_ms", 1.0)
    if not isinstance(interval, int | float) or isinstance(interval, bool) or interval < 0:
        raise ConfigError("commit_interval_ms", "must be a number >= 0")
    return BrokerConfig(
        data_dir=data_dir,
        host=host,
        port=port,
        topics=topics,
        tokens=tuple(tokens),
        tokens_db=tokens_db,
        auth_required=required,
        tls_cert=cert,
        tls_key=key,
        max_body_bytes=_int(raw, "max_body_bytes", "", 8 * 1024 * 1024, 1024) or 0,
        max_decompressed_bytes=_int(raw, "max_decompressed_bytes", "", None, 1024),
        max_records_per_request=_int(raw, "max_records_per_request", "", 10_000, 1) or 1,
        commit_interval_ms=float(interval),
        state_checkpoint_ms=_int(raw, "state_checkpoint_ms", "", 1000, 10) or 1000,
        auto_create_partitions=_int(raw, "auto_create_partitions", "", 0, 0) or 0,
        max_topics=max_topics,
        retention_check_ms=_int(raw, "retention_check_ms", "", 30_000, 10) or 30_000,
        mirrors=_mirrors(raw.get("mirrors", {}), base_dir),
        limits=_limits(raw.get("limits", {})),
        protect_metrics=protect_metrics,
    )


def _number(d: dict[str, Any], key: str, path: str, default: float, minimum: float,
            maximum: float) -> float:
    v = d.get(key, default)
    if not isinstance(v, int | float) or isinstance(v, bool) or not minimum <= v <= maximum:
        raise ConfigError(path + key, f"must be a number in {minimum}..{maximum}, got {v!r}")
    return float(v)


def _limits(raw: Any) -> ConnectionLimits:
    if not isinstance(raw, dict):
        raise ConfigError("limits", "must be a table")
    _known(raw, {"max_connections", "header_timeout_s", "keep_alive_s", "max_header_bytes"},
           "limits.")
    d = ConnectionLimits()
    return ConnectionLimits(
        max_connections=_int(raw, "max_connections", "limits.", d.max_connections, 1)
        or d.max_connections,
        header_timeout_s=_number(raw, "header_timeout_s", "limits.", d.header_timeout_s,
                                 0.1, 3600),
        keep_alive_s=_number(raw, "keep_alive_s", "limits.", d.keep_alive_s, 0.1, 3600),
        max_header_bytes=_int(raw, "max_header_bytes", "limits.", d.max_header_bytes, 1024)
        or d.max_header_bytes,
    )


def _scope(t: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
    """A token's ``topics`` / ``groups``: fnmatch patterns; absent means all (``["*"]``)."""
    v = t.get(key, ["*"])
    if (not isinstance(v, list) or not 0 < len(v) <= MAX_SCOPE_PATTERNS
            or not all(isinstance(p, str) and 0 < len(p) <= 256 and "," not in p for p in v)):
        raise ConfigError(path + key, f"must be a list of 1..{MAX_SCOPE_PATTERNS} fnmatch "
                          "patterns (strings without commas), e.g. [\"telemetry\", \"dash-*\"]")
    return tuple(v)


def _mirrors(raw: Any, base_dir: Path) -> dict[str, Any]:
    from .mirrors.settings import parse_mirrors  # late: the mirrors package imports us

    return parse_mirrors(raw, base_dir)


def load_config(path: str | os.PathLike[str]) -> BrokerConfig:
    """Read and validate a cloud.toml file."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(str(p), "config file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), f"invalid TOML: {exc}") from exc
    return parse_config(raw, p.parent)
