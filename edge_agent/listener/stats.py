"""What the listener counts, and what a connection asks of its server.

Strategy: the counters are plain integers and Counters bumped on the event loop (no
metrics lock on the hot path), read by ``Listener.status`` for ``GET /status`` and
``/metrics``. ``Host`` is the narrow face of ``server.Listener`` a ``connection.Connection``
sees, so the two modules do not import each other.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from mqttproto import ReasonCode

from ..inbox import Inbox, InMessage
from .auth import Authenticator
from .config import ListenerConfig
from .sessions import Sessions


@dataclass
class ListenerStats:
    connects: int = 0
    publishes: int = 0
    pubacks: int = 0
    acl_denied: int = 0
    malformed: int = 0
    takeovers: int = 0
    over_limit: int = 0  # sockets closed at once: max_connections reached
    wills: int = 0
    hurries: int = 0  # commits asked for at once: every publisher was waiting for a PUBACK
    refused: Counter[str] = field(default_factory=Counter)  # CONNACK refusals by reason
    disconnects: Counter[str] = field(default_factory=Counter)  # by reason
    last_error: str = ""


class Host(Protocol):
    """What a connection needs of its server (``server.Listener``)."""

    cfg: ListenerConfig
    stats: ListenerStats
    sessions: Sessions
    auth: Authenticator
    congested: bool
    #: readings waiting in one inbox beyond which connections stop being read
    inbox_high: int
    #: connections that have published QoS 1, and those of them waiting for PUBACKs
    publishers: int
    waiting: int

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...
    def submit(self, msg: InMessage) -> None: ...
    def inbox_for(self, topic: str) -> Inbox: ...
    def forget(self, conn: Any) -> None: ...
    def wait_for_room(self, conn: Any) -> None: ...
    def will_later(self, client_id: str, will: Any, expiry_s: int) -> None: ...
    def session_started(self, client_id: str, clean_start: bool) -> None: ...
    def note(self, message: str) -> None: ...
    def hurry(self) -> None: ...
    def now_waiting(self, conn: Any, waiting: bool = True) -> None: ...




def reason_label(reason: int) -> str:
    """A reason code's label for the counters ("not_authorized")."""
    try:
        return ReasonCode(reason).name.lower()
    except ValueError:
        return f"{reason:#04x}"


__all__ = ["Host", "ListenerStats", "reason_label"]
