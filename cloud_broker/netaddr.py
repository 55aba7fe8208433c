"""Listen addresses and URLs in configuration: checked once, with the key in the error.

Strategy: a listen address is ``host:port`` and nothing else (no scheme, no path), a URL
has one of the schemes its key allows, a host and a port in 1..65535. Both fail with a
``ConfigError`` that names the key and shows the expected form, so a typo is one line at
start instead of a resolver error from deep inside the server. Values echoed in errors
are masked (they may carry credentials).
"""

from __future__ import annotations

import re
import urllib.parse

from .config import ConfigError
from .redact import mask_url

# A DNS name or an IPv4 address; IPv6 literals come in brackets.
_HOST = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})")
_LISTEN = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.%A-Za-z]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})")


def parse_listen(value: object, key: str) -> tuple[str, int]:
    """``"host:port"`` (``[::1]:8080`` for IPv6) -> (host, port); ConfigError naming ``key``."""
    form = "must be 'host:port' such as '0.0.0.0:8080' or '[::]:8443' (no scheme or path)"
    if not isinstance(value, str):
        raise ConfigError(key, f"{form}, got {value!r}")
    m = _LISTEN.fullmatch(value)
    if m is None:
        raise ConfigError(key, f"{form}, got {mask_url(value)!r}")
    host = m.group("v6") if m.group("v6") is not None else m.group("host")
    if m.group("v6") is None and not _HOST.fullmatch(host):
        raise ConfigError(key, f"{form}, got {mask_url(value)!r}")
    port = int(m.group("port"))
    if port > 65535:  # 0 asks the system for a free port (tests)
        raise ConfigError(key, f"port must be 0..65535, got {port}")
    return host, port


def check_url(value: object, key: str, schemes: tuple[str, ...]) -> str:
    """A URL with one of ``schemes``, a host and a valid port; returned unchanged."""
    form = " or ".join(f"{s}://host:port" for s in schemes)
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"must be a URL ({form}), got {value!r}")
    shown = mask_url(value)
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port  # raises ValueError when out of range or not a number
    except ValueError as exc:
        raise ConfigError(key, f"must be a URL ({form}) with a port in 1..65535, "
                               f"got {shown!r}") from exc
    if parts.scheme.lower() not in schemes:
        raise ConfigError(key, f"must be a URL ({form}), got {shown!r}")
    if not parts.hostname or any(c.isspace() for c in value):
        raise ConfigError(key, f"must be a URL with a host ({form}), got {shown!r}")
    if port == 0:
        raise ConfigError(key, f"port must be 1..65535, got {shown!r}")
    return value


__all__ = ["check_url", "parse_listen"]
