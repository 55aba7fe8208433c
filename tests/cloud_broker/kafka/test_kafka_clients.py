"""Real Kafka clients no one here wrote (kcat, librdkafka, aiokafka, kafka-python) read
the partitions through the Kafka listener and share one group coordinator."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kafka_testing import TOKEN, config, running_broker

KCAT = shutil.which("kcat")


def kcat(*args: str) -> str:
    assert KCAT, "kcat is installed by .ci/run"
    out = subprocess.run([KCAT, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_kcat_lists_metadata_and_consumes_with_keys_headers_timestamps(tmp_path: Path) -> None:
    with running_broker(config(tmp_path)) as rb:
        rb.append(0, 20)
        meta = kcat("-b", rb.bootstrap, "-L")
        assert 'topic "telemetry" with 2 partitions' in meta
        lines = kcat("-b", rb.bootstrap, "-C", "-t", "telemetry", "-p", "0", "-o",
                     "beginning", "-e", "-f", "%o|%k|%s|%T|%h\n").splitlines()
        assert len(lines) == 20
        assert lines[3] == '3|dev-1|{"v": 3}|1700000000003|origin=gw-1:3'
        by_offset = kcat("-b", rb.bootstrap, "-C", "-t", "telemetry", "-p", "0", "-o", "15",
                         "-e", "-f", "%o\n").split()
        assert by_offset == [str(i) for i in range(15, 20)]
        by_time = kcat("-b", rb.bootstrap, "-C", "-t", "telemetry", "-p", "0", "-o",
                       "s@1700000000010", "-e", "-f", "%o\n").split()
        assert by_time[0] == "10" and len(by_time) == 10


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_batches_decode_in_librdkafka(tmp_path: Path, compression: str) -> None:
    with running_broker(config(tmp_path, compression=compression)) as rb:
        rb.append(1, 50)
        lines = kcat("-b", rb.bootstrap, "-C", "-t", "telemetry", "-p", "1", "-o",
                     "beginning", "-e", "-f", "%o %s\n").splitlines()
        assert lines[-1] == '49 {"v": 49}' and len(lines) == 50


def _confluent(bootstrap: str, group: str, **extra: str):
    from confluent_kafka import Consumer
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "auto.offset.reset": "earliest", "enable.auto.commit": False,
                     "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                     "partition.assignment.strategy": "range", "max.poll.interval.ms": 10000,
                     **extra})


def _member(bootstrap: str, group: str):
    c = _confluent(bootstrap, group)
    c.subscribe(["telemetry"])
    return c


def _drain(c, want: int, timeout: float = 30.0) -> list:
    import time
    out = []
    end = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < end:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            out.append(m)
    return out


def test_confluent_group_commit_resume_and_shared_offsets(tmp_path: Path) -> None:
    with running_broker(config(tmp_path)) as rb:
        rb.append(0, 30)
        rb.append(1, 30)
        c = _member(rb.bootstrap, "g-one")
        got = _drain(c, 60)
        assert len(got) == 60
        assert {m.key() for m in got} == {b"dev-1"}
        assert dict(got[0].headers())["origin"].startswith(b"gw-1:")
        c.commit(asynchronous=False)
        c.close()
        # one coordinator: the HTTP view sees the offsets the Kafka client committed
        committed = rb.call(rb.broker.groups.committed, "g-one")
        assert sorted((r["partition"], r["offset"]) for r in committed) == [(0, 30), (1, 30)]
        rb.append(0, 5)
        c2 = _member(rb.bootstrap, "g-one")
        again = _drain(c2, 5)
        assert [m.offset() for m in again] == [30, 31, 32, 33, 34]
        c2.close()


def test_librdkafka_and_aiokafka_share_a_group_and_partitions_move(tmp_path: Path) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.structs import TopicPartition

    with running_broker(config(tmp_path)) as rb:
        rb.append(0, 10)
        rb.append(1, 10)
        c = _member(rb.bootstrap, "g-mixed")
        assert len(_drain(c, 20)) == 20
        done = c.commit(asynchronous=False)
        assert sorted((tp.partition, tp.offset, tp.error) for tp in done) == [
            (0, 10, None), (1, 10, None)]

        stop = threading.Event()
        lock = threading.Lock()

        def poll_c() -> None:  # librdkafka rejoins from poll(), as an application would
            while not stop.is_set():
                with lock:
                    c.poll(0.1)

        poller = threading.Thread(target=poll_c, daemon=True)
        poller.start()

        async def aio() -> set[int]:
            a = AIOKafkaConsumer("telemetry", bootstrap_servers=rb.bootstrap,
                                 group_id="g-mixed", enable_auto_commit=False,
                                 auto_offset_reset="earliest", session_timeout_ms=6000,
                                 heartbeat_interval_ms=500,
                                 partition_assignment_strategy=(RangePartitionAssignor,))
            await a.start()
            try:
                for _ in range(100):
                    if a.assignment():
                        break
                    await asyncio.sleep(0.05)
                mine = {tp.partition for tp in a.assignment()}
                assert len(mine) == 1
                await a.commit({TopicPartition("telemetry", p): 10 for p in mine})
                return mine
            finally:
                await a.stop()  # leaves: its partition moves back

        mine = asyncio.run(aio())
        stop.set()
        poller.join(5)
        committed = {r["partition"]: r["offset"]
                     for r in rb.call(rb.broker.groups.committed, "g-mixed")}
        assert all(committed[p] == 10 for p in mine)
        # the leaver's partition moves back to the librdkafka member
        (p,) = mine
        rb.append(p, 3)
        moved = _drain(c, 3)
        assert [(m.partition(), m.offset()) for m in moved] == [(p, 10), (p, 11), (p, 12)]
        c.close()


def test_kafka_python_reads_with_sasl_plain_token(tmp_path: Path) -> None:
    from kafka import KafkaConsumer, TopicPartition

    with running_broker(config(tmp_path, sasl=True)) as rb:
        rb.append(0, 7)
        k = KafkaConsumer(bootstrap_servers=rb.bootstrap, security_protocol="SASL_PLAINTEXT",
                          sasl_mechanism="PLAIN", sasl_plain_username="any",
                          sasl_plain_password=TOKEN, consumer_timeout_ms=5000,
                          auto_offset_reset="earliest")
        tp = TopicPartition("telemetry", 0)
        k.assign([tp])
        k.seek_to_beginning(tp)
        vals = [m.value for m in k]
        k.close()
        assert vals[-1] == b'{"v": 6}' and len(vals) == 7
        bad = subprocess.run([KCAT or "kcat", "-b", rb.bootstrap, "-L", "-X",
                              "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN",
                              "-X", "sasl.username=x", "-X", "sasl.password=wrong"],
                             capture_output=True, text=True, timeout=30)
        assert bad.returncode != 0


def test_sasl_ssl_with_the_brokers_certificate(tmp_path: Path) -> None:
    from tests.cloud_broker.test_tls import make_certs

    ca, cert, key = make_certs(tmp_path)
    with running_broker(config(tmp_path / "data", sasl=True, tls_cert=cert,
                               tls_key=key)) as rb:
        rb.append(0, 3)
        sasl = ["-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=PLAIN",
                "-X", "sasl.username=reader", "-X", f"sasl.password={TOKEN}",
                "-X", f"ssl.ca.location={ca}"]
        lines = kcat("-b", rb.bootstrap, *sasl, "-C", "-t", "telemetry", "-p", "0", "-o",
                     "beginning", "-e", "-f", "%o %s\n").splitlines()
        assert lines == ['0 {"v": 0}', '1 {"v": 1}', '2 {"v": 2}']
        meta = kcat("-b", rb.bootstrap, *sasl, "-L")
        assert 'topic "telemetry"' in meta


def test_group_scope_and_one_protocol_per_group(tmp_path: Path) -> None:
    from kafka import KafkaConsumer
    from kafka.errors import GroupAuthorizationFailedError

    from cloud_broker.groups import AssignorMismatch

    with running_broker(config(tmp_path, sasl=True)) as rb:
        rb.append(0, 2)
        k = KafkaConsumer("telemetry", bootstrap_servers=rb.bootstrap, group_id="other",
                          security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                          sasl_plain_username="u", sasl_plain_password=TOKEN)
        with pytest.raises(GroupAuthorizationFailedError):
            k.poll(timeout_ms=5000)
        k.close()
        c = _member(rb.bootstrap, "g-held")  # no SASL: refused before anything else
        assert _drain(c, 1, timeout=3) == []
        c.close()

    with running_broker(config(tmp_path / "open")) as rb:
        rb.append(0, 2)
        c = _member(rb.bootstrap, "g-held")
        assert len(_drain(c, 2)) == 2
        join = rb.broker.groups.join("g-held", "http-1", ["telemetry"], 5000, None)
        with pytest.raises(AssignorMismatch):
            asyncio.run_coroutine_threadsafe(join, rb.loop).result(10)
        c.close()
