"""Kafka's default key partitioner: murmur2 of the key bytes, modulo partitions.

Strategy: a device key must land on the same partition here as it would in
Kafka (so a mirror into Kafka, or a Kafka consumer reasoning about keys, keeps
per-device order, G4), which means bit-for-bit the Java client's
``org.apache.kafka.common.utils.Utils.murmur2`` and ``toPositive(h) % n``.
Java's int arithmetic is emulated by masking to 32 bits and reading the sign
back at the end.  Pure Python murmur2 costs microseconds per key while the
broker sees a few thousand distinct device keys, so ``partition_for`` is
memoised; ``murmur2`` itself is not.
"""

from __future__ import annotations

import functools
import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_R = 24
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """The signed 32-bit murmur2 hash of ``data``, as Kafka's Java client computes it."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    words = length // 4
    # All full little-endian 4-byte words at once, then the 0-3 byte tail.
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & _MASK
        k ^= k >> _R
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    end = length - tail
    # Java's switch falls through: case 3, then 2, then 1 (which multiplies).
    if tail == 3:
        h ^= data[end + 2] << 16
    if tail >= 2:
        h ^= data[end + 1] << 8
    if tail >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@functools.lru_cache(maxsize=1 << 16)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``: ``(murmur2(key) & 0x7fffffff) % n``."""
    if type(partitions) is not int or partitions < 1:
        raise ValueError(f"partitions must be a positive int, got {partitions!r}")
    if not isinstance(key, bytes):
        raise TypeError(f"key must be bytes, got {type(key).__name__}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions
