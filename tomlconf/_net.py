"""Addresses in configuration: listen addresses, URLs and host names.

Strategy: a listen address is ``host:port`` and nothing else (no scheme, no path); a URL
has one of the schemes its key allows, a host and a port in 1..65535; a host is a DNS
name or an IP address with no scheme or port. A mistake fails at start with the key and
the expected form instead of a resolver error from deep inside a server or client.
"""

from __future__ import annotations

import re
import ssl
import urllib.parse
from pathlib import Path

from ._errors import ConfigError, shown

# A DNS name or an IPv4 address; IPv6 literals come in brackets.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")
_LISTEN = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.%A-Za-z]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})")
# A bare host as MQTT clients take it: a name, an IPv4 address or an IPv6 literal.
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*")


def parse_listen(value: object, key: str, example: str = "0.0.0.0:8080") -> tuple[str, int]:
    """``"host:port"`` (``[::1]:8080`` for IPv6; port 0 = any free port) -> (host, port)."""
    form = f"must be 'host:port' such as '{example}' or '[::]:8443' (no scheme or path)"
    if not isinstance(value, str):
        raise ConfigError(key, f"{form}, got {shown(value)}")
    m = _LISTEN.fullmatch(value)
    if m is None:
        raise ConfigError(key, f"{form}, got {shown(value)}")
    host = m.group("v6") if m.group("v6") is not None else m.group("host")
    if m.group("v6") is None and not _NAME.fullmatch(host):
        raise ConfigError(key, f"{form}, got {shown(value)}")
    port = int(m.group("port"))
    if port > 65535:
        raise ConfigError(key, f"port must be 0..65535, got {port}")
    return host, port


def parse_url(value: object, key: str, schemes: tuple[str, ...]) -> str:
    """A URL with one of ``schemes``, a host and a valid port; returned unchanged."""
    form = " or ".join(f"{s}://host:port" for s in schemes)
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"must be a URL ({form}), got {shown(value)}")
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port  # raises ValueError when out of range or not a number
    except ValueError as exc:
        raise ConfigError(key, f"must be a URL ({form}) with a port in 1..65535, "
                               f"got {shown(value)}") from exc
    if parts.scheme.lower() not in schemes:
        raise ConfigError(key, f"must be a URL ({form}), got {shown(value)}")
    if not parts.hostname or any(c.isspace() for c in value):
        raise ConfigError(key, f"must be a URL with a host ({form}), got {shown(value)}")
    if port == 0:
        raise ConfigError(key, f"port must be 1..65535, got {shown(value)}")
    return value


def parse_urls(value: object, key: str, schemes: tuple[str, ...],
               max_items: int = 16) -> tuple[str, ...]:
    """One URL or a list of 1..``max_items`` distinct ones, without trailing slashes."""
    items = value if isinstance(value, list) else [value]
    if not items or len(items) > max_items:
        raise ConfigError(key, f"must be a URL or a list of 1..{max_items} URLs, "
                               f"got {shown(value)}")
    urls = tuple(parse_url(v, key, schemes).rstrip("/") for v in items)
    if len(set(urls)) != len(urls):
        raise ConfigError(key, f"lists the same URL twice: {shown(value)}")
    return urls


def is_host(value: str) -> bool:
    """A host name, IPv4 address or bare IPv6 literal (no scheme, no port)."""
    return _HOST.fullmatch(value) is not None


def check_ca_file(path: Path | None, key: str) -> None:
    """A CA file named in a config loads now, not with a traceback at the first
    connection (parsing stays free of file access for tests and tools)."""
    if path is None:
        return
    try:
        ssl.create_default_context(cafile=str(path))
    except OSError as exc:  # ssl.SSLError is an OSError too: check it first
        if isinstance(exc, ssl.SSLError):
            raise ConfigError(key, f"{path} holds no PEM certificate") from exc
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from exc
