"""[mirrors.<name>] validation, and the SQL target's rows (JSON columns, a hostile payload)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from cloud_broker.config import ConfigError, parse_config
from cloud_broker.mirrors import parse_mirror
from cloud_broker.mirrors.settings import PG_CONNECTIONS
from cloud_broker.mirrors.sql_target import MAX_JSON_COLUMNS, SqlTarget
from shared_log import StoredRecord


def test_a_cloud_toml_with_every_target(tmp_path: Path) -> None:
    cfg = parse_config({
        "data_dir": "data",
        "topics": {"telemetry": {}, "a.b": {}},
        "mirrors": {
            "dr": {"topic": "telemetry", "target": "broker", "url": "https://dr:8080/",
                   "token": "secret-token"},
            "js": {"topic": "a.b", "target": "nats", "servers": "nats://n:4222",
                   "replicas": 3, "duplicate_window_s": 300},
            "db": {"topic": "telemetry", "target": "sql", "path": "arch.db",
                   "run": "standalone", "batch_records": 10},
        }}, tmp_path)
    dr, js, db = cfg.mirrors["dr"], cfg.mirrors["js"], cfg.mirrors["db"]
    assert dr.url == "https://dr:8080" and dr.public()["token"] == "***"
    assert "secret" not in repr(dr)
    assert js.servers == ("nats://n:4222",) and js.replicas == 3
    assert js.stream_name == "EDGESTREAM_a_b"
    assert db.path == tmp_path / "arch.db" and db.run == "standalone"
    assert db.batch_records == 10
    assert parse_mirror("pg", {"topic": "t", "target": "postgres"}, tmp_path).connections == \
        PG_CONNECTIONS
    assert parse_mirror("pg", {"topic": "t", "target": "postgres", "connections": 9},
                        tmp_path).connections == 9


@pytest.mark.parametrize(("table", "key"), [
    ({"target": "sql", "path": "x.db"}, "mirrors.m.topic"),
    ({"topic": "t", "target": "kafka"}, "mirrors.m.target"),
    ({"topic": "t", "target": "sql"}, "mirrors.m.path"),
    ({"topic": "t", "target": "sql", "path": "x", "servers": "nats://x"}, "mirrors.m.servers"),
    ({"topic": "t", "target": "broker"}, "mirrors.m.url"),
    ({"topic": "t", "target": "nats", "replicas": 0}, "mirrors.m.replicas"),
    ({"topic": "t", "target": "nats", "stream": "a.b"}, "mirrors.m.stream"),
    ({"topic": "t", "target": "sql", "path": "x", "table": "drop table"}, "mirrors.m.table"),
    ({"topic": "t", "target": "sql", "path": "x", "run": "sometimes"}, "mirrors.m.run"),
    ({"topic": "t", "target": "sql", "path": "x", "batch_records": True},
     "mirrors.m.batch_records"),
    ({"topic": "t", "target": "postgres", "connections": 0}, "mirrors.m.connections"),
    ({"topic": "t", "target": "postgres", "connections": 65}, "mirrors.m.connections"),
    ({"topic": "t", "target": "sql", "path": "x", "connections": 2}, "mirrors.m.connections"),
])
def test_mistakes_name_their_key(table: dict, key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_mirror("m", table, tmp_path)
    assert err.value.key == key


def test_sql_rows_are_browsable_and_bounded(tmp_path: Path) -> None:
    hostile = json.dumps({f"k{i}": i for i in range(MAX_JSON_COLUMNS * 2)}).encode()
    records = [
        StoredRecord(0, b"dev-1", b'{"temp": 21.5, "ok": true, "nested": {"a": 1}}', 1000,
                     (("origin", b"gw/s/g/0"),)),
        StoredRecord(1, b"\xff\x00", b"\xfe\x01 not json", 2000),
        StoredRecord(2, b"dev-2", hostile, 3000),
        StoredRecord(3, b"dev-3", b'{"bad key!": 1, "temp": 19, "state": "hot"}', 4000),
    ]

    async def main() -> None:
        t = SqlTarget(tmp_path / "m.db")
        await t.open("telemetry", 1)
        assert await t.next_offset(0) is None
        await t.write(0, records)
        await t.write(0, records[1:3])  # a replay changes nothing
        assert await t.next_offset(0) == 4
        await t.close()

    asyncio.run(main())
    db = sqlite3.connect(tmp_path / "m.db")
    db.row_factory = sqlite3.Row
    rows = db.execute("select * from records order by offset").fetchall()
    assert len(rows) == 4
    assert rows[0]["value_temp"] == 21.5 and json.loads(rows[0]["value_nested"]) == {"a": 1}
    assert rows[0]["time"] == "1970-01-01T00:00:01.000+00:00"
    assert json.loads(rows[0]["headers"]) == {"origin": "gw/s/g/0"}
    assert rows[1]["key"] == b"\xff\x00" and rows[1]["value"] == b"\xfe\x01 not json"
    assert rows[3]["value_temp"] == 19
    columns = [d[0] for d in db.execute("select * from records").description]
    value_columns = [c for c in columns if c.startswith("value_")]
    assert len(value_columns) == MAX_JSON_COLUMNS  # the hostile record filled the rest
    assert "value_state" not in value_columns and rows[3]["value"].endswith('"hot"}')
