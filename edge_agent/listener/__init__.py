"""The agent as the devices' MQTT server: PUBACK means the reading is on disk.

The rooms::

    config.py      [mqtt_listener]: the keys and their bounds (tomlconf)
    auth.py        device ids (certificate CN, password file, client id) and the ACL
    rules.py       what a CONNECT is answered (pure, table-tested)
    sessions.py    persistent sessions that survive a kill -9 (the session-present flag)
    connection.py  one device connection (asyncio.Protocol over mqttproto)
    handshake.py   its CONNECT, connect and keep-alive timers, states (a base of Connection)
    server.py      the socket, bounds, routing into the stream pipelines, PUBACKs out

See docs/edge-agent.md ("MQTT listener") for what each mode guarantees.
"""

from .config import ListenerConfig, parse_listener
from .server import Listener, ListenerStats

__all__ = ["Listener", "ListenerConfig", "ListenerStats", "parse_listener"]
