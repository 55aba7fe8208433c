"""``[mirrors.<name>]`` in cloud.toml (and the JSON body of POST /v1/mirrors).

Strategy: one frozen dataclass for every target kind, validated up front like the rest of
the config, so a typo fails at start with its key (``mirrors.dr.replicas: must be an
integer >= 1``). Keys that belong to another target kind are refused, not ignored.

Example::

    [mirrors.dr]                    # byte-for-byte copy into another broker
    topic = "telemetry"
    target = "broker"
    url = "https://dr-broker:8080"
    token = "admin-token-of-the-target"
    target_topic = "telemetry"      # default: the source topic

    [mirrors.stream]                # NATS JetStream
    topic = "telemetry"
    target = "nats"
    servers = ["nats://127.0.0.1:4222"]
    stream = "EDGESTREAM_telemetry" # default: EDGESTREAM_<topic>, dots as underscores
    subject_prefix = "edgestream"   # subjects <prefix>.<topic>.<partition>
    replicas = 1                    # 3 on a cluster
    duplicate_window_s = 120

    [mirrors.archive]               # SQLite table, browsable with datasette
    topic = "telemetry"
    target = "sql"
    path = "archive.db"             # relative to the config file
    table = "records"
    json_columns = true             # JSON object values also as value_<key> columns

    # common keys, all optional
    run = "broker"                  # or "standalone": run by `cloud-broker mirror` instead
    batch_records = 1000
    batch_bytes = 1048576
    wait_ms = 1000                  # long-poll wait for new records
    max_backoff_s = 30              # retry backoff ceiling while the target is down
    verify_interval_s = 30          # an idle partition re-asks the target its position
    timeout_s = 10                  # per request to the target
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uplink import is_safe_name

from ..config import ConfigError
from ..netaddr import check_url
from ..redact import mask_url

TARGETS = ("broker", "nats", "sql")
COMMON = {"topic", "target", "run", "batch_records", "batch_bytes", "wait_ms",
          "max_backoff_s", "verify_interval_s", "timeout_s"}
PER_TARGET = {
    "broker": {"url", "token", "target_topic"},
    "nats": {"servers", "stream", "subject_prefix", "replicas", "duplicate_window_s"},
    "sql": {"path", "table", "json_columns"},
}
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_SUBJECT = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: keys whose values are secrets: never echoed in errors
SECRET_KEYS = frozenset({"token"})
NATS_SCHEMES = ("nats", "tls", "ws", "wss")


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    name: str
    topic: str
    target: str
    run: str = "broker"
    batch_records: int = 1000
    batch_bytes: int = 1 << 20
    wait_ms: int = 1000
    max_backoff_s: float = 30.0
    verify_interval_s: float = 30.0
    timeout_s: float = 10.0
    # broker
    url: str | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    target_topic: str | None = None
    # nats
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    stream: str | None = None
    subject_prefix: str = "edgestream"
    replicas: int = 1
    duplicate_window_s: float = 120.0
    # sql
    path: Path | None = None
    table: str = "records"
    json_columns: bool = True

    @property
    def stream_name(self) -> str:
        return self.stream or "EDGESTREAM_" + self.topic.replace(".", "_")

    def public(self) -> dict[str, Any]:
        """The definition without secrets, for GET /v1/mirrors: tokens as ``***``, URLs
        with their credentials masked (``nats://user:***@host:4222``)."""
        out = {"name": self.name, "topic": self.topic, "target": self.target, "run": self.run}
        for k in sorted(PER_TARGET[self.target]):
            v = getattr(self, k if k != "stream" else "stream_name")
            if k in SECRET_KEYS:
                v = "***" if v else None
            elif k == "url" and v:
                v = mask_url(v)
            elif k == "servers":
                v = [mask_url(u) for u in v]
            out[k] = str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v)
        return out


def _num(d: dict[str, Any], key: str, path: str, default: float, minimum: float,
         integer: bool = False) -> Any:
    v = d.get(key, default)
    ok = isinstance(v, int) if integer else isinstance(v, int | float)
    if not ok or isinstance(v, bool) or v < minimum:
        kind = "an integer" if integer else "a number"
        raise ConfigError(path + key, f"must be {kind} >= {minimum}, got {v!r}")
    return v


def _str(d: dict[str, Any], key: str, path: str,
         valid: Callable[[str], object] | None = None) -> str | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v or (valid is not None and not valid(v)):
        shown = "" if key in SECRET_KEYS else f" {v!r}"
        raise ConfigError(path + key, f"invalid value{shown}")
    return v


def parse_mirror(name: str, raw: Any, base_dir: Path, path: str | None = None) -> MirrorConfig:
    """Validate one mirror table; ``path`` prefixes keys in errors (``mirrors.<name>.``)."""
    path = path if path is not None else f"mirrors.{name}."
    if not is_safe_name(name):
        raise ConfigError(path.rstrip("."), "mirror names must match [A-Za-z0-9][A-Za-z0-9._-]*")
    if not isinstance(raw, dict):
        raise ConfigError(path.rstrip("."), "must be a table")
    target = raw.get("target")
    if target not in TARGETS:
        raise ConfigError(path + "target", f"must be one of {list(TARGETS)}, got {target!r}")
    for k in raw:
        if k not in COMMON | PER_TARGET[target]:
            raise ConfigError(path + k, f"unknown key for a {target} mirror")
    topic = _str(raw, "topic", path, is_safe_name)
    if topic is None:
        raise ConfigError(path + "topic", "is required")
    run = raw.get("run", "broker")
    if run not in ("broker", "standalone"):
        raise ConfigError(path + "run", "must be 'broker' or 'standalone'")
    kw: dict[str, Any] = {
        "batch_records": _num(raw, "batch_records", path, 1000, 1, integer=True),
        "batch_bytes": _num(raw, "batch_bytes", path, 1 << 20, 1024, integer=True),
        "wait_ms": _num(raw, "wait_ms", path, 1000, 0, integer=True),
        "max_backoff_s": float(_num(raw, "max_backoff_s", path, 30.0, 0.01)),
        "verify_interval_s": float(_num(raw, "verify_interval_s", path, 30.0, 0.1)),
        "timeout_s": float(_num(raw, "timeout_s", path, 10.0, 0.1)),
    }
    if target == "broker":
        if raw.get("url") is None:
            raise ConfigError(path + "url", "is required: http(s)://host:port of the target")
        url = check_url(raw["url"], path + "url", ("http", "https"))
        kw.update(url=url.rstrip("/"), token=_str(raw, "token", path),
                  target_topic=_str(raw, "target_topic", path, is_safe_name))
    elif target == "nats":
        servers = raw.get("servers", ["nats://127.0.0.1:4222"])
        if isinstance(servers, str):
            servers = [servers]
        if not isinstance(servers, list) or not servers:
            raise ConfigError(path + "servers", "must be a URL or a list of URLs")
        for i, server in enumerate(servers):
            check_url(server, f"{path}servers[{i}]", NATS_SCHEMES)
        kw.update(servers=tuple(servers), stream=_str(raw, "stream", path, _STREAM_NAME.match),
                  subject_prefix=_str(raw, "subject_prefix", path, _SUBJECT.match) or "edgestream",
                  replicas=_num(raw, "replicas", path, 1, 1, integer=True),
                  duplicate_window_s=float(_num(raw, "duplicate_window_s", path, 120.0, 1)))
    else:
        db = _str(raw, "path", path)
        if db is None:
            raise ConfigError(path + "path", "is required: the SQLite file to write")
        p = Path(os.path.expanduser(db))
        json_columns = raw.get("json_columns", True)
        if not isinstance(json_columns, bool):
            raise ConfigError(path + "json_columns", "must be true or false")
        kw.update(path=p if p.is_absolute() else base_dir / p,
                  table=_str(raw, "table", path, _TABLE.match) or "records",
                  json_columns=json_columns)
    return MirrorConfig(name=name, topic=topic, target=target, run=run, **kw)


def parse_mirrors(raw: Any, base_dir: Path) -> dict[str, MirrorConfig]:
    """The ``[mirrors]`` table of cloud.toml."""
    if not isinstance(raw, dict):
        raise ConfigError("mirrors", "must be a table of mirrors")
    return {name: parse_mirror(name, t, base_dir) for name, t in raw.items()}
