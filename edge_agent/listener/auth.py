"""Who a connecting device is, and which topics it may publish to.

Strategy: a device's id comes from the strongest proof it gave: the common name of its
TLS client certificate (checked against ``tls_client_ca`` in the handshake), else the user
name it logged in with (checked against ``password_file``), else - only with
``allow_anonymous`` - its MQTT client id. The ACL is a list of topic filters with
``{device}`` standing for that id, so a device publishes only under its own name.

The password file is the one ``mosquitto_passwd`` writes (``user:$7$<iterations>$<salt
b64>$<hash b64>``: PBKDF2-HMAC-SHA512; the older ``$6$`` salted SHA-512 lines are read
too), so a site moving from Mosquitto keeps its file. It is read again when its
modification time changes (checked at most once a second), so a device is added or
revoked without a restart. Hashes are compared in constant time. A verification costs
one PBKDF2 (about 0.1 ms at mosquitto_passwd's 101 iterations); ``Authenticator`` is
pure and the server runs it off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from paho.mqtt.client import topic_matches_sub

log = logging.getLogger(__name__)

# MQTT 5 CONNACK reason codes this module decides (the server maps them for 3.1.1)
BAD_LOGIN = 0x86  # bad user name or password
NOT_AUTHORIZED = 0x87
BAD_CLIENT_ID = 0x85

_MAX_DEVICE_ID = 256
_FORBIDDEN = frozenset("/+#\x00")


class PasswordFileError(Exception):
    """The password file cannot be read or holds a line that is no known hash."""


@dataclass(frozen=True, slots=True)
class _Hash:
    kind: str  # "7" (PBKDF2-SHA512) or "6" (SHA-512 of password + salt)
    iterations: int
    salt: bytes
    digest: bytes

    def matches(self, password: bytes) -> bool:
        if self.kind == "7":
            got = hashlib.pbkdf2_hmac("sha512", password, self.salt, self.iterations,
                                      len(self.digest))
        else:
            got = hashlib.sha512(password + self.salt).digest()
        return hmac.compare_digest(got, self.digest)


def parse_hash(text: str) -> _Hash:
    """One ``$7$iterations$salt$hash`` or ``$6$salt$hash`` field (base64 parts)."""
    parts = text.split("$")
    try:
        if len(parts) == 5 and parts[0] == "" and parts[1] == "7":
            iterations = int(parts[2])
            if not 1 <= iterations <= 10_000_000:
                raise ValueError("iterations out of range")
            return _Hash("7", iterations, base64.b64decode(parts[3], validate=True),
                         base64.b64decode(parts[4], validate=True))
        if len(parts) == 4 and parts[0] == "" and parts[1] == "6":
            return _Hash("6", 1, base64.b64decode(parts[2], validate=True),
                         base64.b64decode(parts[3], validate=True))
    except (ValueError, binascii.Error) as exc:
        raise PasswordFileError(f"malformed hash: {exc}") from exc
    raise PasswordFileError("not a $7$ (PBKDF2-SHA512) or $6$ hash (use mosquitto_passwd)")


def load_passwords(path: Path) -> dict[str, _Hash]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PasswordFileError(f"cannot read {path}: {exc}") from exc
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise PasswordFileError(f"{path}:{n}: expected user:hash")
        try:
            out[user] = parse_hash(hashed)
        except PasswordFileError as exc:
            raise PasswordFileError(f"{path}:{n}: {exc}") from exc
    return out


class PasswordFile:
    """A password file, read again when it changes (thread-safe: verified off the loop)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime = os.stat(path).st_mtime_ns if path.exists() else None
        self._users = load_passwords(path)
        self._checked = time.monotonic()

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime != self._mtime:
                self._users, self._mtime = load_passwords(self.path), mtime
                log.info("mqtt listener: reloaded %s (%d users)", self.path, len(self._users))
        except (OSError, PasswordFileError) as exc:  # keep the users we had
            log.error("mqtt listener: cannot reload %s: %s", self.path, exc)

    def verify(self, user: str, password: bytes) -> bool:
        with self._lock:
            self._refresh()
            h = self._users.get(user)
        return h is not None and h.matches(password)


def valid_device_id(device: str) -> bool:
    """An id that can stand in a topic level (no separators or wildcards)."""
    return 0 < len(device) <= _MAX_DEVICE_ID and not _FORBIDDEN.intersection(device)


class Authenticator:
    """CONNECT credentials -> device id, and the ACL."""

    def __init__(self, passwords: PasswordFile | None, allow_anonymous: bool,
                 acl: tuple[str, ...]) -> None:
        self.passwords = passwords
        self.allow_anonymous = allow_anonymous
        self.acl = acl

    def authenticate(self, client_id: str, username: str | None, password: bytes | None,
                     cert_cn: str | None) -> tuple[str, int]:
        """(device id, 0) when allowed, else ("", MQTT 5 CONNACK reason code)."""
        if cert_cn is not None:
            device = cert_cn
            if username is not None and self.passwords is not None and not (
                    username == cert_cn and self.passwords.verify(username, password or b"")):
                return "", BAD_LOGIN  # a login on top of a certificate must be its own
        elif username is not None and self.passwords is not None:
            if not self.passwords.verify(username, password or b""):
                return "", BAD_LOGIN
            device = username
        elif self.allow_anonymous:
            device = client_id
        else:
            return "", BAD_LOGIN if username is None else NOT_AUTHORIZED
        if not valid_device_id(device):
            return "", BAD_CLIENT_ID if device == client_id else NOT_AUTHORIZED
        return device, 0

    def filters(self, device: str) -> tuple[str, ...]:
        """The ACL of one device (computed once per connection)."""
        return tuple(p.replace("{device}", device) for p in self.acl)


def may_publish(filters: tuple[str, ...], topic: str) -> bool:
    return any(topic_matches_sub(f, topic) for f in filters)


__all__ = ["Authenticator", "PasswordFile", "PasswordFileError", "load_passwords",
           "may_publish", "parse_hash", "valid_device_id"]
