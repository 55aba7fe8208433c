"""``[storage]`` and ``[storage.jetstream]`` of cloud.toml: where partitions live.

Strategy: as every section, plain checks over the parsed TOML into frozen dataclasses,
each check where the key is read (tomlconf). Imports only tomlconf, so cloud_broker.config
can call it without importing the stores (which import the config).

    [storage]
    backend = "jetstream"            # "local" (default): shared_log files in data_dir
    [storage.jetstream]
    servers = ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]
    replicas = 3                     # copies of every partition (1..5)
    user = "broker"                  # or token = "...", or creds_file = "broker.creds"
    password = "..."
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tomlconf import ConfigError, Section, parse_url

BACKENDS = ("local", "jetstream")
NATS_SCHEMES = ("nats", "tls")


@dataclass(frozen=True, slots=True)
class JetStreamConfig:
    servers: tuple[str, ...]
    replicas: int = 3
    stream_prefix: str = "es"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds_file: Path | None = None
    request_timeout_s: float = 5.0
    #: newest message bodies kept in memory per partition, for live consumers
    cache_bytes: int = 32 << 20
    #: older message bodies fetched ahead of a sequential reader: per partition, per node
    readahead_bytes: int = 8 << 20
    readahead_total_bytes: int = 64 << 20


@dataclass(frozen=True, slots=True)
class StorageConfig:
    backend: str = "local"
    jetstream: JetStreamConfig | None = None


def parse_storage(doc: Section, base_dir: Path) -> StorageConfig:
    """The ``[storage]`` table (absent: the local store)."""
    if not doc.has("storage"):
        return StorageConfig()
    s = doc.section("storage", known={"backend", "jetstream"})
    backend = s.string("backend", "local", choices=BACKENDS)
    if backend == "local":
        if s.has("jetstream"):
            raise s.error("jetstream", 'is only read with backend = "jetstream"')
        return StorageConfig()
    s.required("jetstream", '[storage] backend = "jetstream" needs [storage.jetstream] servers')
    js = s.section("jetstream", known={
        "servers", "replicas", "stream_prefix", "user", "password", "token", "creds_file",
        "request_timeout_s", "cache_bytes", "readahead_bytes", "readahead_total_bytes"})
    js.required("servers", "the cluster's client URLs, nats://host:port")
    raw = js.get("servers")
    if not isinstance(raw, list) or not raw or len(raw) > 64:
        raise js.error("servers", "must be a list of 1..64 URLs (nats://host:port)")
    servers = tuple(parse_url(u, f"{js.key('servers')}[{i}]", NATS_SCHEMES)
                    for i, u in enumerate(raw))
    user = js.string("user", None, nonempty=True)
    password = js.string("password", None, secret=True)
    token = js.string("token", None, nonempty=True, secret=True)
    creds = js.path("creds_file", base_dir)
    if (password is None) != (user is None):
        raise js.error("password" if user is not None else "user",
                       "user and password go together")
    if sum(x is not None for x in (user, token, creds)) > 1:
        raise ConfigError(js.key("token"), "use one of user/password, token, creds_file")
    prefix = js.string("stream_prefix", "es", check=_prefix_ok,
                       form="must be 1..32 characters of A-Za-z0-9 and -")
    return StorageConfig("jetstream", JetStreamConfig(
        servers=servers, replicas=js.integer("replicas", 3, minimum=1, maximum=5),
        stream_prefix=prefix, user=user, password=password, token=token, creds_file=creds,
        request_timeout_s=js.number("request_timeout_s", 5.0, minimum=0.1, maximum=60),
        cache_bytes=js.integer("cache_bytes", 32 << 20, minimum=0, maximum=1 << 34),
        readahead_bytes=js.integer("readahead_bytes", 8 << 20, minimum=0, maximum=1 << 30),
        readahead_total_bytes=js.integer("readahead_total_bytes", 64 << 20, minimum=0,
                                         maximum=1 << 36)))


def _prefix_ok(v: str) -> bool:
    return 0 < len(v) <= 32 and all(c.isascii() and (c.isalnum() or c == "-") for c in v)


__all__ = ["BACKENDS", "JetStreamConfig", "StorageConfig", "parse_storage"]
