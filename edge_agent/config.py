"""edge.toml: load, apply environment overrides, validate.

Strategy: one frozen dataclass per section, validated at start with the shared toolkit
(``tomlconf``) so that a mistake names its key (``streams[1].full_policy: must be one of
drop_oldest, reject_new, got 'drop'``). The known keys of a section are its dataclass's
fields. Environment variables override file values: ``EDGE_AGENT__UPLINK__TOKEN=...`` sets
``uplink.token`` (``tomlconf.apply_env``: sections and keys joined by double underscores,
values parsed as TOML scalars when they parse, else taken as strings), so secrets need not
live in the file.

Example (see docs/edge-agent.md for every key)::

    edge_id = "gw-001"
    data_dir = "/var/lib/edge-agent"

    [mqtt_listener]            # devices publish to the agent itself (or [mqtt]: Mosquitto)
    listen = "0.0.0.0:1883"

    [uplink]
    url = "https://cloud.example:8443"

    [[streams]]
    name = "alarms"
    topics = ["devices/+/alarm"]
    priority = 0
    device_key = "topic:devices/{device}/alarm"
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlconf
from tomlconf import ConfigError, Section, is_host, load_toml, parse_listen, shown
from uplink import is_safe_name

from .config_ingest import IngestConfig, is_filter, parse_ingest
from .listener.config import ListenerConfig, check_listener_files, parse_listener
from .transforms.spec import TransformSpec, derived_names, parse_transforms

ENV_PREFIX = "EDGE_AGENT__"


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
    url: str = "http://127.0.0.1:8080"  # the first of ``urls``
    token: str | None = None
    compression: str = "zstd"
    max_batch_records: int = 5000
    max_batch_bytes: int = 1024 * 1024
    linger_ms: float = 20.0
    #: a trickle (< min_batch_records, or < trickle_rate/s): a request per min_batch_linger_ms
    min_batch_records: int = 16
    min_batch_linger_ms: float = 1000.0
    trickle_rate: float = 1000.0
    max_in_flight: int = 4
    timeout_s: float = 10.0
    #: bytes/s on the wire for metered links; 0 = unlimited
    bandwidth_bytes_per_s: int = 0
    ca_file: Path | None = None
    retry_max_s: float = 30.0
    #: the broker nodes of one cluster (``url`` as a list in edge.toml), tried in turn
    urls: tuple[str, ...] = ()

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self.urls or (self.url,)


_UPLINK_KEYS = set(UplinkConfig.__slots__) - {"urls"}  # a list goes in ``url``


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
    #: edge processing (docs/edge-processing.md): the transforms, in order
    transforms: tuple[TransformSpec, ...] = ()
    #: whether the raw stream itself goes to the cloud (its derived streams always do)
    forward: bool = True
    #: the derived stream the transforms write (default "<name>-edge")
    derived_name: str = ""
    derived_priority: int | None = None
    derived_cloud_topic: str = ""

    @property
    def topic(self) -> str:
        return self.cloud_topic or self.name

    @property
    def derived(self) -> str:
        return self.derived_name or f"{self.name}-edge"


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    edge_id: str
    data_dir: Path
    streams: tuple[StreamConfig, ...]
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    uplink: UplinkConfig = field(default_factory=UplinkConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    mqtt_listener: ListenerConfig | None = None  # None: devices publish to Mosquitto

    def stream(self, name: str) -> StreamConfig:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(name)


# -- validation ---------------------------------------------------------------------------

_SAFE_NAME = "must match [A-Za-z0-9][A-Za-z0-9._-]*"
_LISTEN_EXAMPLE = "127.0.0.1:9100"


def _stream(d: Section) -> StreamConfig:
    d.only({"name", "topics", "priority", "cloud_topic", "device_key", "qos", "payload",
            "require_sequence", "segment_bytes", "max_bytes", "full_policy", "transforms",
            "forward", "derived_name", "derived_priority", "derived_cloud_topic"})
    name = d.string("name", None, check=is_safe_name, form=_SAFE_NAME)
    if name is None:
        raise d.error("name", "is required")
    topics = d.strings("topics", (), check=is_filter,
                       form="a non-empty list of MQTT topic filters")
    if not topics:
        raise d.error("topics", "must be a non-empty list of MQTT topic filters")
    key = d.string("device_key", "topic:devices/{device}/+")
    kind, _, spec = key.partition(":")
    if kind == "topic":
        if spec.count("{device}") != 1:
            raise d.error("device_key", "a topic pattern needs exactly one {device}")
    elif kind != "field" or not spec:
        raise d.error("device_key", "must be 'topic:<pattern with {device}>' or 'field:<name>'")
    payload = d.string("payload", "json", choices=("json", "cbor", ""))
    if kind == "field" and not payload:
        raise d.error("device_key", "a payload field needs payload = json or cbor")
    qos = d.get("qos", 1)
    if type(qos) is not int or qos not in (0, 1):
        raise d.error("qos", f"must be 0 or 1 (QoS 2 is not supported), got {shown(qos)}")
    transforms, forward = parse_transforms(d, payload), d.boolean("forward", True)
    if not forward and not transforms:  # nothing would ever acknowledge or free its log
        raise d.error("forward", "false needs transforms (the stream would only grow)")
    return StreamConfig(
        name=name,
        topics=topics,
        priority=d.integer("priority", 5, minimum=0),
        cloud_topic=d.string("cloud_topic", "", check=lambda v: not v or is_safe_name(v),
                             form=_SAFE_NAME),
        device_key=key,
        qos=qos,
        payload=payload,
        require_sequence=d.boolean("require_sequence", False),
        segment_bytes=d.integer("segment_bytes", 16 * 1024 * 1024, minimum=4096),
        max_bytes=d.integer("max_bytes", None, minimum=4096),
        full_policy=d.string("full_policy", "reject_new", choices=("drop_oldest", "reject_new")),
        transforms=transforms,
        forward=forward,
        derived_name=d.string("derived_name", "", check=is_safe_name, form=_SAFE_NAME),
        derived_priority=d.integer("derived_priority", None, minimum=0),
        derived_cloud_topic=d.string("derived_cloud_topic", "", check=is_safe_name,
                                     form=_SAFE_NAME),
    )


def _mqtt(m: Section, edge_id: str, base: Path) -> MqttConfig:
    d = MqttConfig()
    default_id = f"edge-agent-{edge_id}"
    cfg = MqttConfig(
        host=m.string("host", d.host, check=is_host,
                      form="must be a host name or IP address (no scheme or port)"),
        port=m.integer("port", d.port, minimum=1, maximum=65535),
        client_id=m.string("client_id", default_id) or default_id,
        username=m.string("username", None),
        password=m.string("password", None, secret=True),
        keepalive_s=m.integer("keepalive_s", d.keepalive_s, minimum=1, maximum=65535),
        session_expiry_s=m.integer("session_expiry_s", d.session_expiry_s, minimum=0,
                                   maximum=2**32 - 1),
        tls_ca=m.path("tls_ca", base),
        reconnect_max_s=m.number("reconnect_max_s", d.reconnect_max_s, minimum=0.1),
        receive_maximum=m.integer("receive_maximum", d.receive_maximum, minimum=1,
                                  maximum=65535),
        protocol=m.string("protocol", d.protocol, choices=("5", "3.1.1")),
    )
    if len(cfg.client_id) > 200:
        raise m.error("client_id", "must be at most 200 characters")
    return cfg


def _uplink(u: Section, base: Path) -> UplinkConfig:
    d = UplinkConfig()
    urls = tomlconf.parse_urls(u.get("url", d.url), u.key("url"), ("http", "https"))
    return UplinkConfig(
        url=urls[0],
        urls=urls,
        token=u.string("token", None, secret=True),
        compression=u.string("compression", d.compression, choices=("none", "gzip", "zstd")),
        max_batch_records=u.integer("max_batch_records", d.max_batch_records, minimum=1),
        max_batch_bytes=u.integer("max_batch_bytes", d.max_batch_bytes, minimum=1024),
        linger_ms=u.number("linger_ms", d.linger_ms, minimum=0),
        min_batch_records=u.integer("min_batch_records", d.min_batch_records, minimum=1),
        min_batch_linger_ms=u.number("min_batch_linger_ms", d.min_batch_linger_ms,
                                     minimum=0, maximum=60_000),
        trickle_rate=u.number("trickle_rate", d.trickle_rate, minimum=0),
        max_in_flight=u.integer("max_in_flight", d.max_in_flight, minimum=1),
        timeout_s=u.number("timeout_s", d.timeout_s, minimum=0.1),
        bandwidth_bytes_per_s=u.integer("bandwidth_bytes_per_s", 0, minimum=0),
        ca_file=u.path("ca_file", base),
        retry_max_s=u.number("retry_max_s", d.retry_max_s, minimum=0.01),
    )


def _status(s: Section) -> StatusConfig:
    d = StatusConfig()
    listen = s.get("listen", d.listen)
    parse_listen(listen, s.key("listen"), _LISTEN_EXAMPLE)
    return StatusConfig(
        listen=listen,
        stuck_after_s=s.number("stuck_after_s", d.stuck_after_s, minimum=0.1),
        json_logs=s.boolean("json_logs", d.json_logs),
        mqtt_down_after_s=s.number("mqtt_down_after_s", d.mqtt_down_after_s, minimum=0.1),
        task_failure_window_s=s.number("task_failure_window_s", d.task_failure_window_s,
                                       minimum=0),
        restart_max_s=s.number("restart_max_s", d.restart_max_s, minimum=0.1))


def parse_config(raw: Mapping[str, Any], base_dir: Path | None = None) -> EdgeConfig:
    """Validate a parsed edge.toml document (environment overrides already applied)."""
    base = base_dir or Path.cwd()
    doc = Section(raw, known={"edge_id", "data_dir", "mqtt", "uplink", "ingest", "status",
                              "streams", "mqtt_listener"})
    edge_id = doc.string("edge_id", None, check=is_safe_name, form=_SAFE_NAME)
    if edge_id is None:
        raise doc.error("edge_id", "is required")
    doc.required("data_dir")
    data_dir = doc.path("data_dir", base)
    mqtt = _mqtt(doc.section("mqtt", known=MqttConfig.__slots__), edge_id, base)
    uplink = _uplink(doc.section("uplink", known=_UPLINK_KEYS), base)
    ingest = parse_ingest(doc.section("ingest", known=IngestConfig.__slots__))
    status = _status(doc.section("status", known=StatusConfig.__slots__))
    if not isinstance(raw.get("streams"), list) or not raw["streams"]:
        raise doc.error("streams", "at least one [[streams]] table is required")
    listener = parse_listener(doc.section("mqtt_listener", known=ListenerConfig.__slots__),
                              base) if doc.has("mqtt_listener") else None
    rmax = max(mqtt.receive_maximum, listener.receive_maximum if listener else 0)
    if ingest.dedup_window < rmax:  # G5: a redelivery reaches that far back
        raise doc.error("ingest.dedup_window", f"must be at least the MQTT receive_maximum "
                        f"({rmax}), got {ingest.dedup_window}")
    streams = tuple(_stream(t) for t in doc.tables("streams"))
    names = [st.name for st in streams]
    for n in names:
        if names.count(n) > 1:
            raise doc.error("streams", f"stream name {n!r} is used twice")
    cfg = EdgeConfig(edge_id=edge_id, data_dir=data_dir, streams=streams, mqtt=mqtt,
                     uplink=uplink, ingest=ingest, status=status, mqtt_listener=listener)
    owners: dict[str, str] = {}
    for i, s in enumerate(streams):
        for t in derived_names(s.derived, s.transforms):
            if t in names:
                raise doc.error(f"streams[{i}]", f"derived stream {t!r} has the name of a "
                                                 "stream of readings")
            if owners.setdefault(t, s.name) != s.name:
                raise doc.error(f"streams[{i}]", f"derived stream {t!r} is written by "
                                                 f"streams {owners[t]!r} and {s.name!r}")
    return cfg


def apply_env(raw: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Return ``raw`` with ``EDGE_AGENT__SECTION__KEY`` variables applied.

    A number selects an element of an array of tables: ``EDGE_AGENT__STREAMS__0__MAX_BYTES``
    sets ``streams[0].max_bytes`` (the element must exist in the file).
    """
    return tomlconf.apply_env(raw, environ, ENV_PREFIX)


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
                ) -> EdgeConfig:
    p = Path(path)
    raw = apply_env(load_toml(p), os.environ if environ is None else environ)
    cfg = parse_config(raw, p.parent)
    tomlconf.check_ca_file(cfg.uplink.ca_file, "uplink.ca_file")
    tomlconf.check_ca_file(cfg.mqtt.tls_ca, "mqtt.tls_ca")
    check_listener_files(cfg.mqtt_listener)
    return cfg


__all__ = ["ConfigError", "EdgeConfig", "IngestConfig", "MqttConfig", "StatusConfig",
           "StreamConfig", "UplinkConfig", "apply_env", "load_config", "parse_config"]
