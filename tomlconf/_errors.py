"""The one configuration error, and the masking of credentials in what it says.

Strategy: ``ConfigError(key, message)`` reads ``key: message``, where ``key`` is the path
of the value in the document (``mirrors.dr.url``, ``streams[0].qos``, ``--devices``) and
``message`` says what it wants and what it got. Messages often echo the value, and a value
may be a URL with a password in it, so the whole message goes through ``mask_secrets``:
``scheme://user:password@host`` becomes ``scheme://user:***@host`` (a bare
``scheme://token@host`` becomes ``scheme://***@host``), and ``token=``/``password=`` query
parameters lose their values. Masking the finished text rather than each call site means
a new message cannot forget it. The cloud broker masks its logs and API answers with the
same function (``cloud_broker.redact``).
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
#: longest repr of a value echoed in a message (a hostile JSON body may send megabytes)
SHOWN_CHARS = 80

# scheme://[user[:password]@]host : the userinfo part is what carries credentials.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]*)@")
# ?token=... &password=... &access_token=... in URLs and DSNs.
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:[A-Za-z_]*token|password|passwd|pwd|secret|auth)=)(?P<value>[^&;#\s'\"]*)",
    re.IGNORECASE)


# password=... in a libpq key=value connection string (host=db user=u password=...).
_KV_PASSWORD = re.compile(r"(?P<key>(?<![?&;\w])password\s*=\s*)"
                          r"(?P<value>'(?:[^'\\]|\\.)*'|[^\s'\"]\S*)", re.IGNORECASE)


def _mask_userinfo(m: re.Match[str]) -> str:
    user, sep, _password = m.group("userinfo").partition(":")
    if sep:  # user:password -> keep the user, who is useful to know and not a secret
        return f"{m.group('scheme')}{user}:{MASK}@"
    return f"{m.group('scheme')}{MASK}@"  # a bare token as the user (nats://TOKEN@host)


def mask_secrets(text: str) -> str:
    """``text`` with every credential in a URL or DSN replaced by ``***``."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(_mask_userinfo, text)
    text = _QUERY_SECRET.sub(lambda m: m.group("key") + MASK, text)
    return _KV_PASSWORD.sub(lambda m: m.group("key") + MASK, text)


def shown(value: Any) -> str:
    """``repr(value)`` cut to ``SHOWN_CHARS`` for an error message (masked with it)."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


class ConfigError(ValueError):
    """A configuration value is wrong; ``str()`` is ``key: what it wants``, masked."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {mask_secrets(message)}")
        self.key = key
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return type(self), (self.key, self.message)
