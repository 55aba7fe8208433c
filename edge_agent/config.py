"""edge.toml: load, apply environment overrides, validate.

Strategy: one frozen dataclass per section, validated at start so that a mistake names
its key (``streams[1].full_policy: must be one of drop_oldest, reject_new``). Environment
variables override file values: ``EDGE_AGENT__UPLINK__TOKEN=...`` sets ``uplink.token``
(sections and keys joined by double underscores, values parsed as TOML scalars when they
parse, else taken as strings), so secrets need not live in the file.

Example (see docs/edge-agent.md for every key)::

    edge_id = "gw-001"
    data_dir = "/var/lib/edge-agent"

    [mqtt]
    host = "127.0.0.1"
    port = 1883

    [uplink]
    url = "https://cloud.example:8443"
    token = "..."

    [[streams]]
    name = "alarms"
    topics = ["devices/+/alarm"]
    priority = 0
    device_key = "topic:devices/{device}/alarm"

    [[streams]]
    name = "telemetry"
    topics = ["devices/+/telemetry"]
    priority = 5
    device_key = "topic:devices/{device}/telemetry"
"""

from __future__ import annotations

import copy
import os
import re
import ssl
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uplink import is_safe_name

ENV_PREFIX = "EDGE_AGENT__"


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True, slots=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""  # default: "edge-agent-<edge_id>"
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    tls_ca: Path | None = None
    reconnect_max_s: float = 30.0
    #: how many unacknowledged QoS 1 messages Mosquitto may send at once (receive maximum)
    receive_maximum: int = 1000
    #: "5" (default) or "3.1.1" for brokers without MQTT 5 (the session is then kept with
    #: clean session off; expiry and receive maximum are the broker's own settings)
    protocol: str = "5"


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    url: str = "http://127.0.0.1:8080"
    token: str | None = None
    compression: str = "zstd"
    max_batch_records: int = 5000
    max_batch_bytes: int = 1024 * 1024
    linger_ms: float = 20.0
    max_in_flight: int = 4
    timeout_s: float = 10.0
    #: bytes/s on the wire for metered links; 0 = unlimited
    bandwidth_bytes_per_s: int = 0
    ca_file: Path | None = None
    retry_max_s: float = 30.0


@dataclass(frozen=True, slots=True)
class IngestConfig:
    max_payload_bytes: int = 256 * 1024
    #: payload field holding a per-device sequence number (JSON or CBOR map); "" = none
    sequence_field: str = "seq"
    #: payload field holding the device timestamp (ms since the epoch); "" = none
    timestamp_field: str = "ts"
    commit_interval_ms: float = 10.0
    dead_letter_max_bytes: int = 16 * 1024 * 1024
    #: bytes of each refused payload kept in the dead-letter log
    dead_letter_payload_bytes: int = 4096
    #: most messages appended as one shared_log batch
    batch_max_messages: int = 2000
    #: extra wait for more messages before a batch is appended (0: take what has arrived)
    batch_window_ms: float = 0.0
    #: how often a blocked stream (log full, disk full) retries its append
    backpressure_retry_ms: float = 500.0
    #: how often the per-device dedup marks are checkpointed
    dedup_checkpoint_s: float = 5.0
    #: payload field holding a device's boot epoch (int or short string); "" = none
    epoch_field: str = "boot"
    #: how far back (in sequence numbers) a redelivery can be; a sequence that falls back
    #: further counts as a device restart. Keep >= mqtt.receive_maximum.
    dedup_window: int = 1000
    #: most devices whose dedup marks are kept per stream (least recently seen evicted)
    dedup_max_devices: int = 100_000
    #: extra MQTT filters whose messages matching no stream are dead-lettered (no_stream)
    unmatched_topics: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StatusConfig:
    listen: str = "127.0.0.1:9100"
    #: unhealthy when the acked offset has not moved for this long while a backlog exists
    stuck_after_s: float = 300.0
    json_logs: bool = False
    #: unhealthy when an MQTT session has been disconnected this long (a refusal by the
    #: broker - bad login, TLS - is reported at once)
    mqtt_down_after_s: float = 10.0
    #: a supervised task that failed stays a health problem this long after its failure
    task_failure_window_s: float = 60.0
    #: the longest backoff before a failed task is restarted
    restart_max_s: float = 30.0


@dataclass(frozen=True, slots=True)
class StreamConfig:
    name: str
    topics: tuple[str, ...]
    priority: int = 5
    cloud_topic: str = ""  # default: the stream name
    #: "topic:<pattern with {device}>" or "field:<payload field>"
    device_key: str = "topic:devices/{device}/+"
    qos: int = 1
    #: "json", "cbor" or "" (opaque: no field is read)
    payload: str = "json"
    require_sequence: bool = False
    segment_bytes: int = 16 * 1024 * 1024
    max_bytes: int | None = None
    full_policy: str = "reject_new"

    @property
    def topic(self) -> str:
        return self.cloud_topic or self.name


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    edge_id: str
    data_dir: Path
    streams: tuple[StreamConfig, ...]
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    uplink: UplinkConfig = field(default_factory=UplinkConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    status: StatusConfig = field(default_factory=StatusConfig)

    def stream(self, name: str) -> StreamConfig:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(name)


# -- validation helpers ------------------------------------------------------------------

def _known(d: Mapping[str, Any], keys: set[str], path: str) -> None:
    for k in d:
        if k not in keys:
            raise ConfigError(path + k, f"unknown key (known: {', '.join(sorted(keys))})")


def _num(d: Mapping[str, Any], key: str, path: str, default: Any, minimum: float,
         *, integer: bool = True, optional: bool = False) -> Any:
    v = d.get(key, default)
    if v is None and optional:
        return None
    ok_type = (isinstance(v, int) if integer else isinstance(v, int | float)) and not isinstance(
        v, bool)
    if not ok_type or v < minimum:
        kind = "an integer" if integer else "a number"
        raise ConfigError(path + key, f"must be {kind} >= {minimum}, got {v!r}")
    return v


def _str(d: Mapping[str, Any], key: str, path: str, default: Any, *,
         choices: tuple[str, ...] | None = None, optional: bool = False) -> Any:
    v = d.get(key, default)
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise ConfigError(path + key, f"must be a string, got {v!r}")
    if choices is not None and v not in choices:
        raise ConfigError(path + key, f"must be one of {', '.join(choices)}, got {v!r}")
    return v


def _table(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    v = d.get(key, {})
    if not isinstance(v, Mapping):
        raise ConfigError(key, "must be a table")
    return v


def _path(v: Any, key: str, base: Path) -> Path | None:
    if v is None:
        return None
    if not isinstance(v, str) or not v:
        raise ConfigError(key, f"must be a path string, got {v!r}")
    p = Path(os.path.expanduser(v))
    return p if p.is_absolute() else base / p


_TOPIC_FILTER = re.compile(r"^(?:[^#+/]*|\+)(?:/(?:[^#+/]*|\+))*(?:/#)?$|^#$")


def _qos(d: Mapping[str, Any], path: str) -> int:
    v = d.get("qos", 1)
    if type(v) is not int or v not in (0, 1):
        raise ConfigError(path + "qos", f"must be 0 or 1 (QoS 2 is not supported), got {v!r}")
    return v


def _stream(d: Any, i: int) -> StreamConfig:
    path = f"streams[{i}]."
    if not isinstance(d, Mapping):
        raise ConfigError(f"streams[{i}]", "must be a table")
    _known(d, {"name", "topics", "priority", "cloud_topic", "device_key", "qos", "payload",
               "require_sequence", "segment_bytes", "max_bytes", "full_policy"}, path)
    name = _str(d, "name", path, None)
    if not is_safe_name(name):
        raise ConfigError(path + "name", "must match [A-Za-z0-9][A-Za-z0-9._-]*")
    topics = d.get("topics")
    if (not isinstance(topics, list) or not topics
            or not all(isinstance(t, str) and t and _TOPIC_FILTER.match(t) for t in topics)):
        raise ConfigError(path + "topics", "must be a non-empty list of MQTT topic filters")
    cloud_topic = _str(d, "cloud_topic", path, "")
    if cloud_topic and not is_safe_name(cloud_topic):
        raise ConfigError(path + "cloud_topic", "must match [A-Za-z0-9][A-Za-z0-9._-]*")
    key = _str(d, "device_key", path, "topic:devices/{device}/+")
    kind, _, spec = key.partition(":")
    if kind == "topic":
        if spec.count("{device}") != 1:
            raise ConfigError(path + "device_key", "a topic pattern needs exactly one {device}")
    elif kind != "field" or not spec:
        raise ConfigError(path + "device_key",
                          "must be 'topic:<pattern with {device}>' or 'field:<name>'")
    payload = _str(d, "payload", path, "json", choices=("json", "cbor", ""))
    if kind == "field" and not payload:
        raise ConfigError(path + "device_key", "a payload field needs payload = json or cbor")
    require_seq = d.get("require_sequence", False)
    if not isinstance(require_seq, bool):
        raise ConfigError(path + "require_sequence", "must be true or false")
    return StreamConfig(
        name=name,
        topics=tuple(topics),
        priority=_num(d, "priority", path, 5, 0),
        cloud_topic=cloud_topic,
        device_key=key,
        qos=_qos(d, path),
        payload=payload,
        require_sequence=require_seq,
        segment_bytes=_num(d, "segment_bytes", path, 16 * 1024 * 1024, 4096),
        max_bytes=_num(d, "max_bytes", path, None, 4096, optional=True),
        full_policy=_str(d, "full_policy", path, "reject_new",
                         choices=("drop_oldest", "reject_new")),
    )


def parse_config(raw: Mapping[str, Any], base_dir: Path | None = None) -> EdgeConfig:
    """Validate a parsed edge.toml document (environment overrides already applied)."""
    base = base_dir or Path.cwd()
    _known(raw, {"edge_id", "data_dir", "mqtt", "uplink", "ingest", "status", "streams"}, "")
    edge_id = _str(raw, "edge_id", "", None)
    if not is_safe_name(edge_id):
        raise ConfigError("edge_id", "must match [A-Za-z0-9][A-Za-z0-9._-]*")
    if "data_dir" not in raw:
        raise ConfigError("data_dir", "is required")
    data_dir = _path(raw["data_dir"], "data_dir", base)
    assert data_dir is not None

    m = _table(raw, "mqtt")
    _known(m, {"host", "port", "client_id", "username", "password", "keepalive_s",
               "session_expiry_s", "tls_ca", "reconnect_max_s", "receive_maximum",
               "protocol"}, "mqtt.")
    mqtt = MqttConfig(
        host=_str(m, "host", "mqtt.", "127.0.0.1"),
        port=_num(m, "port", "mqtt.", 1883, 1),
        client_id=_str(m, "client_id", "mqtt.", f"edge-agent-{edge_id}") or f"edge-agent-{edge_id}",
        username=_str(m, "username", "mqtt.", None, optional=True),
        password=_str(m, "password", "mqtt.", None, optional=True),
        keepalive_s=_num(m, "keepalive_s", "mqtt.", 30, 1),
        session_expiry_s=_num(m, "session_expiry_s", "mqtt.", 7 * 24 * 3600, 0),
        tls_ca=_path(m.get("tls_ca"), "mqtt.tls_ca", base),
        reconnect_max_s=_num(m, "reconnect_max_s", "mqtt.", 30.0, 0.1, integer=False),
        receive_maximum=_num(m, "receive_maximum", "mqtt.", 1000, 1),
        protocol=_str(m, "protocol", "mqtt.", "5", choices=("5", "3.1.1")),
    )
    if not _HOST.fullmatch(mqtt.host):
        raise ConfigError("mqtt.host", "must be a host name or IP address (no scheme or port), "
                                       f"got {mqtt.host!r}")
    for key, top in (("port", 65535), ("keepalive_s", 65535), ("receive_maximum", 65535),
                     ("session_expiry_s", 2**32 - 1)):
        if getattr(mqtt, key) > top:
            raise ConfigError(f"mqtt.{key}", f"must be <= {top}")
    if len(mqtt.client_id) > 200:
        raise ConfigError("mqtt.client_id", "must be at most 200 characters")

    u = _table(raw, "uplink")
    _known(u, {"url", "token", "compression", "max_batch_records", "max_batch_bytes",
               "linger_ms", "max_in_flight", "timeout_s", "bandwidth_bytes_per_s", "ca_file",
               "retry_max_s"}, "uplink.")
    url = _http_url(_str(u, "url", "uplink.", "http://127.0.0.1:8080"), "uplink.url")
    uplink = UplinkConfig(
        url=url.rstrip("/"),
        token=_str(u, "token", "uplink.", None, optional=True),
        compression=_str(u, "compression", "uplink.", "zstd", choices=("none", "gzip", "zstd")),
        max_batch_records=_num(u, "max_batch_records", "uplink.", 5000, 1),
        max_batch_bytes=_num(u, "max_batch_bytes", "uplink.", 1024 * 1024, 1024),
        linger_ms=_num(u, "linger_ms", "uplink.", 20.0, 0, integer=False),
        max_in_flight=_num(u, "max_in_flight", "uplink.", 4, 1),
        timeout_s=_num(u, "timeout_s", "uplink.", 10.0, 0.1, integer=False),
        bandwidth_bytes_per_s=_num(u, "bandwidth_bytes_per_s", "uplink.", 0, 0),
        ca_file=_path(u.get("ca_file"), "uplink.ca_file", base),
        retry_max_s=_num(u, "retry_max_s", "uplink.", 30.0, 0.01, integer=False),
    )

    g = _table(raw, "ingest")
    _known(g, {"max_payload_bytes", "sequence_field", "timestamp_field", "commit_interval_ms",
               "dead_letter_max_bytes", "dead_letter_payload_bytes", "batch_max_messages",
               "batch_window_ms", "backpressure_retry_ms", "dedup_checkpoint_s",
               "epoch_field", "dedup_window", "dedup_max_devices", "unmatched_topics"},
           "ingest.")
    unmatched = g.get("unmatched_topics", [])
    if (not isinstance(unmatched, list)
            or not all(isinstance(t, str) and t and _TOPIC_FILTER.match(t) for t in unmatched)):
        raise ConfigError("ingest.unmatched_topics", "must be a list of MQTT topic filters")
    ingest = IngestConfig(
        max_payload_bytes=_num(g, "max_payload_bytes", "ingest.", 256 * 1024, 1),
        sequence_field=_str(g, "sequence_field", "ingest.", "seq"),
        timestamp_field=_str(g, "timestamp_field", "ingest.", "ts"),
        commit_interval_ms=_num(g, "commit_interval_ms", "ingest.", 10.0, 0, integer=False),
        dead_letter_max_bytes=_num(g, "dead_letter_max_bytes", "ingest.", 16 * 1024 * 1024,
                                   1024),
        dead_letter_payload_bytes=_num(g, "dead_letter_payload_bytes", "ingest.", 4096, 0),
        batch_max_messages=_num(g, "batch_max_messages", "ingest.", 2000, 1),
        batch_window_ms=_num(g, "batch_window_ms", "ingest.", 0.0, 0, integer=False),
        backpressure_retry_ms=_num(g, "backpressure_retry_ms", "ingest.", 500.0, 1,
                                   integer=False),
        dedup_checkpoint_s=_num(g, "dedup_checkpoint_s", "ingest.", 5.0, 0.1, integer=False),
        epoch_field=_str(g, "epoch_field", "ingest.", "boot"),
        dedup_window=_num(g, "dedup_window", "ingest.", 1000, 1),
        dedup_max_devices=_num(g, "dedup_max_devices", "ingest.", 100_000, 1),
        unmatched_topics=tuple(unmatched),
    )

    s = _table(raw, "status")
    _known(s, {"listen", "stuck_after_s", "json_logs", "mqtt_down_after_s",
               "task_failure_window_s", "restart_max_s"}, "status.")
    listen = _str(s, "listen", "status.", "127.0.0.1:9100")
    m = _LISTEN.fullmatch(listen)
    if not m or int(m.group("port")) > 65535:
        raise ConfigError("status.listen", "must be 'host:port' such as '127.0.0.1:9100' (no "
                                            f"scheme or path; port 0..65535), got {listen!r}")
    json_logs = s.get("json_logs", False)
    if not isinstance(json_logs, bool):
        raise ConfigError("status.json_logs", "must be true or false")
    status = StatusConfig(listen=listen,
                          stuck_after_s=_num(s, "stuck_after_s", "status.", 300.0, 0.1,
                                             integer=False),
                          json_logs=json_logs,
                          mqtt_down_after_s=_num(s, "mqtt_down_after_s", "status.", 10.0, 0.1,
                                                 integer=False),
                          task_failure_window_s=_num(s, "task_failure_window_s", "status.",
                                                     60.0, 0, integer=False),
                          restart_max_s=_num(s, "restart_max_s", "status.", 30.0, 0.1,
                                             integer=False))

    raw_streams = raw.get("streams")
    if not isinstance(raw_streams, list) or not raw_streams:
        raise ConfigError("streams", "at least one [[streams]] table is required")
    streams = tuple(_stream(d, i) for i, d in enumerate(raw_streams))
    names = [st.name for st in streams]
    for n in names:
        if names.count(n) > 1:
            raise ConfigError("streams", f"stream name {n!r} is used twice")
    return EdgeConfig(edge_id=edge_id, data_dir=data_dir, streams=streams, mqtt=mqtt,
                      uplink=uplink, ingest=ingest, status=status)


# A DNS name, an IPv4 address or an IPv6 literal (bare, as MQTT clients take it).
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*")
_LISTEN = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9_.-]*):(?P<port>\d{1,5})")


def _http_url(url: str, key: str) -> str:
    """An http(s) URL with a host and a port in 1..65535 (``http://host:99999`` is refused
    here, not by the first connection attempt)."""
    form = "must be an http:// or https:// URL such as 'https://cloud.example:8443'"
    shown = re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", url)  # never echo a password
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # ValueError when out of range or not a number
    except ValueError as exc:
        raise ConfigError(key, f"{form} with a port in 1..65535, got {shown!r}") from exc
    if (parts.scheme.lower() not in ("http", "https") or not parts.hostname
            or any(c.isspace() for c in url)):
        raise ConfigError(key, f"{form}, got {shown!r}")
    if port == 0:
        raise ConfigError(key, f"{form} with a port in 1..65535, got {shown!r}")
    return url


def _env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Return ``raw`` with ``EDGE_AGENT__SECTION__KEY`` variables applied.

    A number selects an element of an array of tables: ``EDGE_AGENT__STREAMS__0__MAX_BYTES``
    sets ``streams[0].max_bytes`` (the element must exist in the file).
    """
    out: dict[str, Any] = copy.deepcopy(raw)
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
        if not parts:
            continue
        target: Any = out
        for p in parts[:-1]:
            if isinstance(target, list):
                if not p.isdigit() or int(p) >= len(target):
                    raise ConfigError(name, f"no element {p} in this array of tables")
                target = target[int(p)]
                continue
            nxt = target.get(p)
            if not isinstance(nxt, dict | list):
                nxt = target[p] = {}
            target = nxt
        if not isinstance(target, dict):
            raise ConfigError(name, "must name a key of a table")
        target[parts[-1]] = _env_value(text)
    return out


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
                ) -> EdgeConfig:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(str(p), "config file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), f"invalid TOML: {exc}") from exc
    raw = apply_env(raw, os.environ if environ is None else environ)
    cfg = parse_config(raw, p.parent)
    _check_ca(cfg.uplink.ca_file, "uplink.ca_file")
    _check_ca(cfg.mqtt.tls_ca, "mqtt.tls_ca")
    return cfg


def _check_ca(path: Path | None, key: str) -> None:
    """A CA file named in the config loads now, not with a traceback at the first
    connection (``parse_config`` stays free of file access for tests and tools)."""
    if path is None:
        return
    try:
        ssl.create_default_context(cafile=str(path))
    except OSError as exc:  # ssl.SSLError is an OSError too: check it first
        if isinstance(exc, ssl.SSLError):
            raise ConfigError(key, f"{path} holds no PEM certificate") from exc
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from exc
