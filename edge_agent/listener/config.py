"""``[mqtt_listener]``: the agent as the devices' MQTT server (validated with tomlconf).

Strategy: one frozen dataclass, read and checked in one pass like the other sections of
edge.toml (``edge_agent.config`` calls ``parse_listener`` when the table is present; the
section's absence means devices reach the agent through Mosquitto). Every bound a device
could push against (connections, packet size, unacknowledged readings, idle sockets,
buffered bytes, sessions) is a key here with a finite default.

Example::

    [mqtt_listener]
    listen = "0.0.0.0:8883"
    tls_cert = "/etc/edge-agent/server.pem"
    tls_key = "/etc/edge-agent/server.key"
    tls_client_ca = "/etc/edge-agent/devices-ca.pem"   # devices present certificates
    password_file = "/etc/edge-agent/passwd"           # mosquitto_passwd format
    acl = ["devices/{device}/#"]
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from tomlconf import ConfigError, Section, parse_listen

from .auth import PasswordFileError, load_passwords

#: an ACL pattern: an MQTT topic filter with at most one ``{device}`` per level
_ACL = re.compile(r"^(?:[^#+/]*|\+)(?:/(?:[^#+/]*|\+))*(?:/#)?$|^#$")


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    listen: str = "0.0.0.0:1883"
    #: server certificate and key (PEM); both or neither. With them the port speaks TLS.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: CA of the device certificates; when set every device must present one, and its
    #: certificate's common name is its device id
    tls_client_ca: Path | None = None
    #: user:hash lines as ``mosquitto_passwd`` writes them (PBKDF2-SHA512, ``$7$``)
    password_file: Path | None = None
    #: accept devices without a password or certificate (their client id is the device id)
    allow_anonymous: bool = False
    #: topic filters a device may publish to; ``{device}`` is its own id
    acl: tuple[str, ...] = ("devices/{device}/#",)
    max_connections: int = 10_000
    #: largest MQTT packet accepted (bytes, fixed header included); told to v5 clients
    max_packet_size: int = 512 * 1024
    #: unacknowledged QoS 1 readings per connection (told to v5 clients; a 3.1.1 client
    #: is simply not read from while it has this many waiting)
    receive_maximum: int = 100
    #: a socket that has not completed TLS and CONNECT in this time is closed
    connect_timeout_s: float = 10.0
    #: a connection whose PUBACKs pile up unread beyond this is closed
    max_buffered_bytes: int = 256 * 1024
    #: longest session expiry granted (a client asking more gets this, told in CONNACK)
    session_expiry_max_s: int = 7 * 24 * 3600
    #: persistent sessions kept (the oldest disconnected one is dropped beyond this)
    max_sessions: int = 100_000


def _is_acl(pattern: str) -> bool:
    return bool(pattern) and _ACL.match(pattern.replace("{device}", "x")) is not None


def parse_listener(s: Section, base: Path) -> ListenerConfig:
    """Validate the ``[mqtt_listener]`` table."""
    d = ListenerConfig()
    listen = s.get("listen", d.listen)
    parse_listen(listen, s.key("listen"), d.listen)
    cfg = ListenerConfig(
        listen=listen,
        tls_cert=s.path("tls_cert", base),
        tls_key=s.path("tls_key", base),
        tls_client_ca=s.path("tls_client_ca", base),
        password_file=s.path("password_file", base),
        allow_anonymous=s.boolean("allow_anonymous", d.allow_anonymous),
        acl=s.strings("acl", d.acl, check=_is_acl,
                      form="a list of MQTT topic filters (with {device} for the device id)"),
        max_connections=s.integer("max_connections", d.max_connections, minimum=1,
                                  maximum=1_000_000),
        max_packet_size=s.integer("max_packet_size", d.max_packet_size, minimum=128,
                                  maximum=268_435_460),
        receive_maximum=s.integer("receive_maximum", d.receive_maximum, minimum=1,
                                  maximum=65535),
        connect_timeout_s=s.number("connect_timeout_s", d.connect_timeout_s, minimum=0.1),
        max_buffered_bytes=s.integer("max_buffered_bytes", d.max_buffered_bytes,
                                     minimum=1024),
        session_expiry_max_s=s.integer("session_expiry_max_s", d.session_expiry_max_s,
                                       minimum=0, maximum=2**32 - 1),
        max_sessions=s.integer("max_sessions", d.max_sessions, minimum=1),
    )
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        raise s.error("tls_key" if cfg.tls_key is None else "tls_cert",
                      "tls_cert and tls_key go together")
    if cfg.tls_client_ca is not None and cfg.tls_cert is None:
        raise s.error("tls_client_ca", "needs tls_cert and tls_key (client certificates "
                                       "are checked in the TLS handshake)")
    if not (cfg.allow_anonymous or cfg.password_file or cfg.tls_client_ca):
        raise s.error("allow_anonymous", "no device could connect: set password_file, "
                                         "tls_client_ca, or allow_anonymous = true")
    return cfg


def server_tls(cfg: ListenerConfig) -> ssl.SSLContext | None:
    if cfg.tls_cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
    if cfg.tls_client_ca is not None:
        ctx.load_verify_locations(cafile=str(cfg.tls_client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def check_listener_files(cfg: ListenerConfig | None) -> None:
    """The files named in the section load now, not at the first device (``load_config``;
    ``parse_listener`` stays free of file access for tests and tools)."""
    if cfg is None:
        return
    try:
        server_tls(cfg)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError("mqtt_listener.tls_cert", f"cannot load the certificate, key or "
                                                    f"client CA: {exc}") from exc
    if cfg.password_file is not None:
        try:
            load_passwords(cfg.password_file)
        except PasswordFileError as exc:
            raise ConfigError("mqtt_listener.password_file", str(exc)) from exc


__all__ = ["ListenerConfig", "check_listener_files", "parse_listener", "server_tls"]
