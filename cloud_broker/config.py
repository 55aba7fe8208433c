"""cloud.toml: load and validate the broker's configuration.

Strategy: parse with tomllib into frozen dataclasses and validate everything up front with
the shared toolkit (``tomlconf``: the one ``ConfigError``, credentials masked in its
message), so a mistake fails at start with the key that is wrong
(``topics.telemetry.partitions: must be an integer >= 1, got 0``) instead of on the first
request. Names that become directory names (topics) are checked against the same safe
pattern the protocol uses for edge ids.

Example::

    data_dir = "/var/lib/cloud-broker"
    listen = "0.0.0.0:8080"
    max_body_bytes = 8388608
    max_decompressed_bytes = 16777216   # optional: ingest bodies after decompression
    max_records_per_request = 10000     # optional: records per ingest/replicate request
    retention_check_ms = 30000      # optional: how often topic retention is applied
    max_positions_per_edge = 1000   # optional: ingest positions (stream, generation) per edge
    max_positions = 100000          # optional: ingest positions of all edges

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

    [kafka]                         # optional: Kafka clients read here (docs/kafka.md)
    listen = "0.0.0.0:9092"
    advertised = "broker.example.com:9092"   # what Metadata returns (default: listen)
    sasl = true                     # SASL/PLAIN, password = a read token
    compression = "none"            # none | gzip | zstd

    [mirrors.dr]                    # optional, see cloud_broker/mirrors/settings.py and
    topic = "telemetry"             # docs/mirrors.md (targets: broker, nats, sql)
    target = "nats"
    servers = ["nats://127.0.0.1:4222"]
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tomlconf import ConfigError, Section, load_toml, parse_listen
from uplink import is_safe_name

if TYPE_CHECKING:
    from .mirrors.settings import MirrorConfig
    from .storage.settings import StorageConfig

PERMISSIONS = frozenset({"ingest", "read", "admin"})
DEFAULT_MAX_TOPICS = 100
#: ingest positions (stream, generation) one edge id may open, and all edges together
DEFAULT_MAX_POSITIONS_PER_EDGE = 1000
DEFAULT_MAX_POSITIONS = 100_000
MAX_SCOPE_PATTERNS = 256


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
class KafkaConfig:
    """``[kafka]``: the Kafka wire-protocol listener for consumers (docs/kafka.md)."""

    host: str
    port: int
    advertised_host: str
    advertised_port: int
    #: SASL/PLAIN: username ignored, password = a broker token with ``read``. False: no
    #: authentication at all (only when [auth] required = false too)
    sasl: bool = True
    compression: str = "none"
    max_request_bytes: int = 1024 * 1024
    max_connections: int = 1000


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
    #: ingest positions (stream, generation) per edge id, and in all: a new one past
    #: either is refused (429)
    max_positions_per_edge: int = DEFAULT_MAX_POSITIONS_PER_EDGE
    max_positions: int = DEFAULT_MAX_POSITIONS
    #: how often retention (retention_bytes / retention_ms of each topic) is applied (ms)
    retention_check_ms: int = 30_000
    #: [mirrors.<name>] tables by name
    mirrors: dict[str, MirrorConfig] = field(default_factory=dict)
    #: [limits]: connection cap and timeouts
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    #: [auth] protect_metrics: /metrics, /openapi.json and /healthz detail need a read token
    protect_metrics: bool = False
    #: [kafka]: the Kafka listener, None when off
    kafka: KafkaConfig | None = None
    #: [storage]: where partitions live (cloud_broker.storage.settings); None: local files
    storage: StorageConfig | None = None


def parse_config(raw: dict[str, Any], base_dir: Path | None = None) -> BrokerConfig:
    """Validate a parsed TOML document; relative paths are taken from ``base_dir``."""
    base_dir = base_dir or Path.cwd()
    doc = Section(raw, known={
        "data_dir", "listen", "max_body_bytes", "tls", "topics", "tokens", "auth",
        "commit_interval_ms", "state_checkpoint_ms", "auto_create_partitions", "mirrors",
        "retention_check_ms", "max_decompressed_bytes", "max_records_per_request",
        "max_topics", "limits", "kafka", "storage", "max_positions_per_edge",
        "max_positions"})
    doc.required("data_dir")
    data_dir = doc.path("data_dir", base_dir)
    host, port = parse_listen(doc.get("listen", "127.0.0.1:8080"), "listen")
    topics = _topics(doc)
    tokens = tuple(_token(t) for t in doc.tables("tokens"))

    auth = doc.section("auth", known={"tokens_db", "required", "protect_metrics"})
    tls = doc.section("tls", known={"cert", "key"}) if doc.has("tls") else None
    if tls is not None:
        for k in ("cert", "key"):
            tls.required(k, "[tls] needs cert and key")

    mirrors = _mirrors(doc.get("mirrors", {}), base_dir)
    auto_create = doc.integer("auto_create_partitions", 0, minimum=0)
    for m in mirrors.values():
        if m.run == "broker" and not auto_create and m.topic not in topics:
            raise ConfigError(f"mirrors.{m.name}.topic", unknown_topic(m.topic, topics))
    d = BrokerConfig(data_dir=data_dir)
    max_topics = doc.integer("max_topics", DEFAULT_MAX_TOPICS, minimum=1)
    if len(topics) > max_topics:
        raise doc.error("max_topics", f"is {max_topics} but {len(topics)} topics are "
                                      "configured")
    return BrokerConfig(
        data_dir=data_dir,
        host=host,
        port=port,
        topics=topics,
        tokens=tokens,
        tokens_db=auth.path("tokens_db", base_dir),
        auth_required=auth.boolean("required", True),
        tls_cert=tls.path("cert", base_dir) if tls else None,
        tls_key=tls.path("key", base_dir) if tls else None,
        max_body_bytes=doc.integer("max_body_bytes", d.max_body_bytes, minimum=1024),
        max_decompressed_bytes=doc.integer("max_decompressed_bytes", None, minimum=1024),
        max_records_per_request=doc.integer("max_records_per_request",
                                            d.max_records_per_request, minimum=1),
        commit_interval_ms=doc.number("commit_interval_ms", d.commit_interval_ms, minimum=0),
        state_checkpoint_ms=doc.integer("state_checkpoint_ms", d.state_checkpoint_ms,
                                        minimum=10),
        auto_create_partitions=auto_create,
        max_topics=max_topics,
        max_positions_per_edge=doc.integer("max_positions_per_edge",
                                           d.max_positions_per_edge, minimum=1),
        max_positions=doc.integer("max_positions", d.max_positions, minimum=1),
        retention_check_ms=doc.integer("retention_check_ms", d.retention_check_ms, minimum=10),
        mirrors=mirrors,
        limits=_limits(doc.section("limits", known=ConnectionLimits.__slots__)),
        protect_metrics=auth.boolean("protect_metrics", False),
        kafka=_kafka(doc.section("kafka", known={
            "listen", "advertised", "sasl", "compression", "max_request_bytes",
            "max_connections"})) if doc.has("kafka") else None,
        storage=_storage(doc, base_dir),
    )


def unknown_topic(topic: str, known: Iterable[str]) -> str:
    """Why a mirror of ``topic`` is refused: the broker has no such topic and will not
    create one (a mirror of it would wait for ever)."""
    names = ", ".join(sorted(known)[:20]) or "none"
    return (f"topic {topic!r} does not exist on this broker (topics: {names}): add "
            f"[topics.{topic}] or set auto_create_partitions")


def _kafka(k: Section) -> KafkaConfig:
    k.required("listen", "[kafka] needs listen = \"host:port\"")
    host, port = parse_listen(k.get("listen"), "kafka.listen", "0.0.0.0:9092")
    listen_form = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    adv_host, adv_port = parse_listen(k.get("advertised", listen_form),
                                      "kafka.advertised", "broker.example.com:9092")
    return KafkaConfig(
        host=host, port=port, advertised_host=adv_host, advertised_port=adv_port,
        sasl=k.boolean("sasl", True),
        compression=k.string("compression", "none", choices=("none", "gzip", "zstd")),
        max_request_bytes=k.integer("max_request_bytes", 1024 * 1024, minimum=1024,
                                    maximum=64 * 1024 * 1024),
        max_connections=k.integer("max_connections", 1000, minimum=1))


def _topics(doc: Section) -> dict[str, TopicConfig]:
    topics: dict[str, TopicConfig] = {}
    for name, raw in doc.named_tables("topics", "topics"):
        if not is_safe_name(name):
            raise ConfigError(f"topics.{name}", "topic names must match "
                                                "[A-Za-z0-9][A-Za-z0-9._-]*")
        t = Section(raw, f"topics.{name}",
                    known={"partitions", "retention_bytes", "retention_ms", "segment_bytes"})
        topics[name] = TopicConfig(
            name=name,
            partitions=t.integer("partitions", 1, minimum=1),
            retention_bytes=t.integer("retention_bytes", None, minimum=1),
            retention_ms=t.integer("retention_ms", None, minimum=1),
            segment_bytes=t.integer("segment_bytes", 64 * 1024 * 1024, minimum=4096),
        )
    return topics


def _token(t: Section) -> TokenConfig:
    t.only({"token", "edge_id", "permissions", "topics", "groups"})
    tok = t.string("token", None, check=lambda v: len(v) >= 8, secret=True,
                   form="must be a string of at least 8 characters")
    if tok is None:
        raise t.error("token", "must be a string of at least 8 characters")
    edge = t.string("edge_id", "*", check=lambda v: v == "*" or is_safe_name(v),
                    form="must be '*' or a safe name")
    perms = t.strings("permissions", ("ingest",), check=PERMISSIONS.__contains__,
                      form=f"a list drawn from {sorted(PERMISSIONS)}")
    return TokenConfig(tok, edge, frozenset(perms), _scope(t, "topics"), _scope(t, "groups"))


def _limits(s: Section) -> ConnectionLimits:
    d = ConnectionLimits()
    return ConnectionLimits(
        max_connections=s.integer("max_connections", d.max_connections, minimum=1),
        header_timeout_s=s.number("header_timeout_s", d.header_timeout_s, minimum=0.1,
                                  maximum=3600),
        keep_alive_s=s.number("keep_alive_s", d.keep_alive_s, minimum=0.1, maximum=3600),
        max_header_bytes=s.integer("max_header_bytes", d.max_header_bytes, minimum=1024),
    )


def _scope(t: Section, key: str) -> tuple[str, ...]:
    """A token's ``topics`` / ``groups``: fnmatch patterns; absent means all (``["*"]``)."""
    v = t.strings(key, ("*",), max_items=MAX_SCOPE_PATTERNS,
                  check=lambda p: 0 < len(p) <= 256 and "," not in p,
                  form=f"a list of 1..{MAX_SCOPE_PATTERNS} fnmatch patterns (strings "
                       "without commas), e.g. [\"telemetry\", \"dash-*\"]")
    if not v:
        raise t.error(key, f"must be a list of 1..{MAX_SCOPE_PATTERNS} fnmatch patterns")
    return v


def _mirrors(raw: Any, base_dir: Path) -> dict[str, MirrorConfig]:
    # Late: importing cloud_broker.mirrors runs its __init__, whose runner imports the
    # partition store, which imports this module (settings.py itself imports only tomlconf).
    from .mirrors.settings import parse_mirrors

    return parse_mirrors(raw, base_dir)


def _storage(doc: Section, base_dir: Path) -> StorageConfig:
    # Late, as _mirrors: cloud_broker.storage's __init__ imports the stores, which import
    # this module (storage/settings.py itself imports only tomlconf).
    from .storage.settings import parse_storage

    return parse_storage(doc, base_dir)


def load_config(path: str | os.PathLike[str]) -> BrokerConfig:
    """Read and validate a cloud.toml file."""
    p = Path(path)
    return parse_config(load_toml(p), p.parent)


__all__ = ["DEFAULT_MAX_TOPICS", "PERMISSIONS", "BrokerConfig", "ConfigError", "ConnectionLimits",
           "TokenConfig", "TopicConfig", "load_config", "parse_config", "unknown_topic"]
