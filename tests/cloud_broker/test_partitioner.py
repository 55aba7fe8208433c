"""murmur2 and partition_for must agree bit for bit with Kafka's Java client."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_broker.ingest.partitioner import murmur2, partition_for


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_kafka(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [(b"", 681), (b"a", 524), (b"abc", 107), (b"123456789", 566)],
)
def test_partition_for_matches_kafka_with_1000_partitions(key: bytes, expected: int) -> None:
    assert partition_for(key, 1000) == expected


def test_every_tail_length_is_hashed() -> None:
    # 0-3 trailing bytes take different branches; each must change the hash
    keys = [b"abcd", b"abcde", b"abcdef", b"abcdefg", b"abcdefgh"]
    assert len({murmur2(k) for k in keys}) == len(keys)


@given(key=st.binary(max_size=64))
def test_murmur2_is_a_signed_32_bit_int(key: bytes) -> None:
    h = murmur2(key)
    assert -(2**31) <= h < 2**31
    assert murmur2(bytes(key)) == h


@given(key=st.binary(max_size=64), partitions=st.integers(1, 10_000))
def test_partition_is_in_range_and_deterministic(key: bytes, partitions: int) -> None:
    p = partition_for(key, partitions)
    assert 0 <= p < partitions
    assert partition_for(key, partitions) == p
    assert p == (murmur2(key) & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize("partitions", [0, -1, 1.0, True])
def test_partition_count_must_be_positive(partitions: object) -> None:
    with pytest.raises(ValueError):
        partition_for(b"k", partitions)  # type: ignore[arg-type]


def test_key_must_be_bytes() -> None:
    with pytest.raises(TypeError):
        partition_for("k", 3)  # type: ignore[arg-type]
