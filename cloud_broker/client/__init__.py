"""The Python consumer client of the broker's HTTP API (no server code, no Starlette).

Rooms: ``consumer`` is ``Consumer`` (assign or subscribe, poll, commit; what most code
wants); ``fetch`` keeps one partition's next fetch in flight; ``group`` is a member's
join/heartbeat/leave loop; ``transport`` is ``BrokerClient``, one method per endpoint
with retries, and the exception tree (``ConsumerError`` and its kinds); ``cli`` is
``cloud-broker consume``. Records are decoded by ``cloud_broker.record_codec``.
"""

from ..record_codec import ConsumerRecord, FetchResponse
from .consumer import Consumer
from .transport import (
    BrokerClient,
    BrokerUnavailable,
    ConsumerError,
    OffsetOutOfRangeError,
    RebalanceError,
    exit_code,
)

__all__ = [
    "BrokerClient",
    "BrokerUnavailable",
    "Consumer",
    "ConsumerError",
    "ConsumerRecord",
    "FetchResponse",
    "OffsetOutOfRangeError",
    "RebalanceError",
    "exit_code",
]
