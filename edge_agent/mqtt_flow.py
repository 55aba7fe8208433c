"""The agent's own Receive Maximum for its Mosquitto session: read no more QoS 1 PUBLISHes
than ``mqtt.receive_maximum`` ahead of the PUBACKs.

Why: the dedup window (``ingest.dedup_window`` >= ``receive_maximum``) assumes that a
redelivery after a crash never reaches further back than the session's unacknowledged
messages, i.e. ``receive_maximum``. Mosquitto 2.0 does not hold a resumed session to the
Receive Maximum the client sent (every PUBACK lets up to another Receive Maximum out), so
the bound is enforced here, as the agent's own MQTT listener enforces it for its clients:
``MqttSession`` counts the QoS 1 PUBLISHes read on the current connection and not yet
acknowledged, reads at most ``room()`` more in a drain, and while there is no room it
stops watching the socket (``pause``: the reader removed, so level-triggered epoll does
not report the fd again and again). PUBACKs make room: ``acked`` says when to resume (the
reader re-added and a drain scheduled, also for bytes already buffered, which raise no
readable event). Whatever the broker sends meanwhile waits in the socket buffers, and
then in TCP's window on the broker's side. A drain's budget counts every packet it reads
(QoS 0 readings included, which wait behind the limit too), so the count never passes the
limit: paho's ``loop_read`` reads one packet while the client has no outgoing or QoS 2
messages in flight (the agent publishes nothing; the configuration refuses QoS 2).

The count belongs to one connection: a new connection (epoch) starts from zero, as the
broker redelivers every unacknowledged message on it and the old packet ids are never
acknowledged on it.

Keep-alive while paused: packets the broker sends behind the waiting PUBLISHes (the
PINGRESP among them) are not read, so paho would end the connection as dead after about
twice ``keepalive_s`` without a byte read, and each reconnect would deliver up to
``receive_maximum`` redeliveries more to a stream that cannot append them (a full disk):
memory growing with the length of the spell. So while paused ``MqttSession._keepalive``
holds paho's clock of bytes received (``IngestClient.hold_keepalive``); PINGREQs still go
out, so the broker keeps the connection. A broker that dies meanwhile is noticed once
reading resumes (or at the first PUBACK written to a dead socket): while paused there is
nothing the session could receive from it anyway.

Not thread-safe: everything here runs on the agent's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class ReceiveWindow:
    """QoS 1 messages read on the current connection and not yet acknowledged."""

    __slots__ = ("limit", "paused_fd", "unacked")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.unacked = 0
        #: the fd whose reader was removed while there is no room, else None
        self.paused_fd: int | None = None

    def reset(self) -> None:
        """A new connection: nothing of it is unacknowledged yet (its socket has its own
        reader; a pause of the old one ended with it)."""
        self.unacked = 0
        self.paused_fd = None

    def room(self) -> int:
        """How many more QoS 1 PUBLISHes may be read now."""
        return self.limit - self.unacked

    def acked(self, n: int) -> bool:
        """``n`` PUBACKs of this connection went out; True when reading should resume."""
        self.unacked = max(0, self.unacked - n)
        return self.paused_fd is not None and self.unacked < self.limit

    def pause(self, loop: asyncio.AbstractEventLoop, sock: Any) -> None:
        """Stop watching ``sock`` until PUBACKs make room (epoll is level-triggered: a
        watched fd with unread bytes would be reported on every loop iteration)."""
        if self.paused_fd is None:
            fd = sock.fileno()
            loop.remove_reader(fd)
            self.paused_fd = fd

    def resume(self, loop: asyncio.AbstractEventLoop, sock: Any,
               on_readable: Callable[[], None]) -> bool:
        """Watch the paused socket again; False when ``sock`` (the current connection's,
        or None) is not the one paused: that connection is gone and a new one has its own
        reader."""
        fd, self.paused_fd = self.paused_fd, None
        if sock is None or fd is None or sock.fileno() != fd:
            return False
        loop.add_reader(fd, on_readable)
        return True
