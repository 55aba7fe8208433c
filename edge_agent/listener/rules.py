"""What the listener answers to a CONNECT: pure rules, apart from the password check.

Strategy: everything a CONNECT decides - accepted or the reason code, the client id
(assigned when empty, MQTT 5), the device id and its ACL, the session expiry granted and
the CONNACK properties that tell an MQTT 5 client the server's limits - is computed here
from the packet, the TLS peer certificate and the config, so the table of refusals is
tested without sockets. The password check (PBKDF2) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

from mqttproto import V5, Connect, ReasonCode
from mqttproto import Property as P

from .auth import Authenticator, may_publish
from .config import ListenerConfig

_MAX_CLIENT_ID = 256
_EXPIRY_NEVER = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: int  # 0: accepted
    client_id: str = ""
    device: str = ""
    acl: tuple[str, ...] = ()
    expiry_s: int = 0
    assigned: bool = False  # the client id was made up here (MQTT 5 tells it)
    expiry_changed: bool = False  # granted another expiry than asked (MQTT 5 tells it)

    def connack_properties(self, cfg: ListenerConfig) -> dict[int, Any]:
        """MQTT 5 CONNACK properties: the limits a v5 client must keep to."""
        props: dict[int, Any] = {
            P.RECEIVE_MAXIMUM: cfg.receive_maximum,
            P.MAXIMUM_QOS: 1,
            P.MAXIMUM_PACKET_SIZE: cfg.max_packet_size,
            P.WILDCARD_SUBSCRIPTION_AVAILABLE: 0,
            P.SUBSCRIPTION_IDENTIFIER_AVAILABLE: 0,
            P.SHARED_SUBSCRIPTION_AVAILABLE: 0,
        }
        if self.assigned:
            props[P.ASSIGNED_CLIENT_IDENTIFIER] = self.client_id
        if self.expiry_changed:
            props[P.SESSION_EXPIRY_INTERVAL] = self.expiry_s
        return props


def session_expiry(asked: int, maximum: int) -> int:
    """The expiry granted for ``asked`` seconds (0xFFFFFFFF: never) under ``maximum``."""
    return min(maximum, asked) if asked != _EXPIRY_NEVER else maximum


def common_name(cert: dict[str, Any] | None) -> str | None:
    """The subject CN of a verified peer certificate (``SSLObject.getpeercert()``)."""
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def precheck(c: Connect, cfg: ListenerConfig) -> Verdict | None:
    """The refusals that need no credentials check; None when there are none."""
    if c.properties.get(P.AUTHENTICATION_METHOD) is not None:
        return Verdict(ReasonCode.BAD_AUTHENTICATION_METHOD)  # no enhanced auth here
    if c.will is not None and c.will.qos == 2:
        return Verdict(ReasonCode.QOS_NOT_SUPPORTED)
    if len(c.client_id) > _MAX_CLIENT_ID:
        return Verdict(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)
    if not c.client_id and (c.protocol_level != V5 and not c.clean_start):
        return Verdict(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)  # 3.1.1 section 3.1.3.1
    return None


async def connect_verdict(c: Connect, cert: dict[str, Any] | None, auth: Authenticator,
                          cfg: ListenerConfig) -> Verdict:
    early = precheck(c, cfg)
    if early is not None:
        return early
    client_id, assigned = c.client_id, False
    if not client_id:
        client_id, assigned = "auto-" + secrets.token_hex(8), True
    cn = common_name(cert)
    if c.username is not None and auth.passwords is not None:
        device, reason = await asyncio.to_thread(auth.authenticate, client_id, c.username,
                                                 c.password, cn)
    else:
        device, reason = auth.authenticate(client_id, c.username, c.password, cn)
    if reason:
        return Verdict(reason)
    acl = auth.filters(device)
    if c.will is not None and not may_publish(acl, c.will.topic):
        return Verdict(ReasonCode.NOT_AUTHORIZED)
    if c.protocol_level == V5:
        asked = int(c.properties.get(P.SESSION_EXPIRY_INTERVAL, 0))
        expiry = session_expiry(asked, cfg.session_expiry_max_s)
        changed = expiry != asked
    else:  # 3.1.1: a clean-session-off session never expires; ours do, after the maximum
        expiry, changed = (0 if c.clean_start else cfg.session_expiry_max_s), False
    return Verdict(0, client_id, device, acl, expiry, assigned, changed)


__all__ = ["Verdict", "common_name", "connect_verdict", "precheck", "session_expiry"]
