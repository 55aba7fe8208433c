"""The Kafka wire protocol for consumers: kcat, librdkafka, aiokafka, kafka-python.

``KafkaServer`` (server) serves the broker's partitions and groups; ``wire`` adapts kio's
message types; ``records`` builds record batches v2; ``handlers`` and ``group_handlers``
answer the APIs. docs/kafka.md has the supported APIs, versions and limits.
"""

from .records import encode_batches
from .server import KafkaServer
from .wire import SUPPORTED

__all__ = ["SUPPORTED", "KafkaServer", "encode_batches"]
