"""The PostgreSQL target beyond the conformance suite: rows and position in one
transaction, replays, typed columns and the documented queries, hostile values, and
credentials that never show."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_server import PASSWORD, PostgresServer

from cloud_broker.mirrors import TargetRejected, TargetUnavailable, build_target, parse_mirror
from cloud_broker.mirrors.pg_copy import copy_chunks, copy_data
from cloud_broker.mirrors.pg_rows import clean_text, parse_json, record_of
from cloud_broker.mirrors.postgres_target import PostgresTarget
from shared_log import StoredRecord

pytestmark = pytest.mark.timeout(120)
TOPIC = "telemetry"
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.close()


def target(pg: PostgresServer, table: str, **kw: Any) -> PostgresTarget:
    return PostgresTarget(pg.dsn, table, password=PASSWORD, timeout_s=5, **kw)


def reading(i: int, **doc: Any) -> StoredRecord:
    body = {"seq": i, "temp": 20.5 + i, "site": "plant-7", **doc}
    return StoredRecord(i, b"dev-%d" % (i % 3), json.dumps(body).encode(),
                        1_700_000_000_000 + i * 1000, (("origin", b"gw/%d" % i),))


def write(t: PostgresTarget, records: list[StoredRecord], partition: int = 0) -> None:
    async def go() -> None:
        try:
            await t.open(TOPIC, 1)
            await t.write(partition, records)
        finally:
            await t.close()
    asyncio.run(go())


def position(t: PostgresTarget, partition: int = 0) -> int | None:
    async def go() -> int | None:
        try:
            await t.open(TOPIC, 1)
            return await t.next_offset(partition)
        finally:
            await t.close()
    return asyncio.run(go())


def query(pg: PostgresServer, text: str, args: Any = ()) -> list[Any]:
    with pg.connect() as conn:
        return conn.execute(text, args).fetchall()


def offsets(pg: PostgresServer, table: str) -> list[int]:
    return [r[0] for r in query(pg, f'select "offset" from {table} order by 1')]


def test_rows_and_position_commit_in_one_transaction(pg: PostgresServer) -> None:
    t = target(pg, "atomic")
    write(t, [reading(i) for i in range(100)])
    # The position update of the next batch fails: its rows must not stay either.
    with pg.connect() as conn:
        conn.execute("create function no_move() returns trigger language plpgsql as $$ "
                     "begin if new.next_offset > 150 then raise exception 'refused'; end if; "
                     "return new; end $$")
        conn.execute("create trigger no_move before update on edgestream_positions "
                     "for each row execute function no_move()")
    with pytest.raises(TargetRejected, match="refused"):  # an operator's trigger said no
        write(t, [reading(i) for i in range(100, 200)])
    assert offsets(pg, "atomic") == list(range(100))
    assert position(t) == 100
    with pg.connect() as conn:
        conn.execute("drop trigger no_move on edgestream_positions")
    write(t, [reading(i) for i in range(100, 200)])
    assert offsets(pg, "atomic") == list(range(200))
    assert position(t) == 200


def test_replays_overlaps_and_rows_written_by_hand_insert_nothing_twice(
        pg: PostgresServer) -> None:
    t = target(pg, "replay")
    write(t, [reading(i) for i in range(100)])
    write(t, [reading(i) for i in range(100)])
    write(t, [reading(i) for i in range(50, 150)])
    assert offsets(pg, "replay") == list(range(150))
    assert position(t) == 150
    # Retention removed old rows: a replay does not bring them back.
    with pg.connect() as conn:
        conn.execute('delete from replay where "offset" < 100')
    write(t, [reading(i) for i in range(150)])
    assert offsets(pg, "replay") == list(range(100, 150))
    # A row past the position, written by hand: the batch still lands, the row is kept.
    with pg.connect() as conn:
        conn.execute("insert into replay (topic, partition, \"offset\", time, ts_ms, value) "
                     "values (%s, 0, 160, now(), 0, '{\"by\": \"hand\"}')", [TOPIC])
    write(t, [reading(i) for i in range(150, 200)])
    assert offsets(pg, "replay") == list(range(100, 200))
    assert query(pg, "select value->>'by' from replay where \"offset\" = 160") == [("hand",)]
    assert position(t) == 200
    # Without a position row the target still knows from its rows.
    with pg.connect() as conn:
        conn.execute("delete from edgestream_positions where relation = 'replay'")
    assert position(t) == 200
    assert position(t, partition=1) == 0


def test_rows_already_past_the_position_take_the_merge_path_exactly_once(
        pg: PostgresServer) -> None:
    """The fast path COPYs straight into the table; rows past the position (written by
    hand, or a deleted position row) make the primary key refuse that, and the batch is
    merged instead: every offset once, the rows found there kept, the position moved."""
    t = target(pg, "fallback")
    write(t, [reading(i) for i in range(100)])
    assert t.merged_batches == 0
    with pg.connect() as conn:
        for o in (100, 150, 199):
            conn.execute("insert into fallback (topic, partition, \"offset\", time, ts_ms, "
                         "value) values (%s, 0, %s, now(), 0, '{\"by\": \"hand\"}')",
                         [TOPIC, o])
    write(t, [reading(i) for i in range(100, 200)])
    assert t.merged_batches == 1
    count = 'select count(*), count(distinct "offset") from fallback'
    assert query(pg, count) == [(200, 200)]
    assert offsets(pg, "fallback") == list(range(200))
    assert query(pg, "select \"offset\" from fallback where value->>'by' = 'hand' "
                     "order by 1") == [(100,), (150,), (199,)]
    assert position(t) == 200
    # A replay is skipped by the position; the next batch takes the fast path again.
    write(t, [reading(i) for i in range(100, 200)])
    write(t, [reading(i) for i in range(200, 250)])
    assert t.merged_batches == 1
    assert query(pg, count) == [(250, 250)]
    # The position row deleted: the next batch overlaps rows that are there.
    with pg.connect() as conn:
        conn.execute("delete from edgestream_positions where relation = 'fallback'")
    write(t, [reading(i) for i in range(200, 300)])
    assert t.merged_batches == 2
    assert query(pg, count) == [(300, 300)]
    assert offsets(pg, "fallback") == list(range(300))
    assert position(t) == 300


def test_the_merge_skips_by_the_primary_key_only(pg: PostgresServer) -> None:
    """The slow way skips rows the primary key already holds, nothing else: a row that
    another unique constraint (one added by hand) refuses fails the batch, rejected,
    with nothing of it written: never dropped in silence."""
    t = target(pg, "merge_unique")
    write(t, [reading(i) for i in range(10)])
    with pg.connect() as conn:
        conn.execute("create unique index merge_unique_ts on merge_unique (ts_ms)")
        conn.execute("insert into merge_unique (topic, partition, \"offset\", time, ts_ms, "
                     "value) values (%s, 0, 12, now(), 0, '{}')", [TOPIC])
        conn.execute("delete from edgestream_positions where relation = 'merge_unique'")
    # Offset 12 is past the position (the merge path); offset 15's ts_ms is one the
    # added constraint already holds (offset 5's).
    clash = StoredRecord(15, b"dev-0", b"{}", reading(5).timestamp, ())
    with pytest.raises(TargetRejected, match="merge_unique_ts"):
        write(t, [reading(i) for i in range(10, 15)] + [clash])
    assert offsets(pg, "merge_unique") == [*range(10), 12]


def test_columns_typed_fields_and_the_documented_queries(pg: PostgresServer) -> None:
    fields = {"temp": "double", "seq": "bigint", "site": "text", "ok": "boolean",
              "tags": "jsonb"}
    t = target(pg, "readings", fields=fields)
    records = [reading(i, ok=i % 2 == 0, tags={"line": i}) for i in range(30)]
    records += [StoredRecord(30, b"dev-0", b'{"temp": "hot", "seq": 1e400, "ok": 1}',
                             1_700_000_100_000, ()),
                StoredRecord(31, b"dev-1", b'{"seq": 123456789012345678901234567890}',
                             1_700_000_101_000, ())]
    write(t, records)
    types = dict(query(pg, "select column_name, data_type from information_schema.columns "
                           "where table_name = 'readings'"))
    assert types["time"] == "timestamp with time zone" and types["value"] == "jsonb"
    assert types["temp"] == "double precision" and types["seq"] == "bigint"
    assert types["ok"] == "boolean" and types["tags"] == "jsonb" and types["site"] == "text"
    idx = query(pg, "select indexdef from pg_indexes where tablename = 'readings'")
    assert any("(key, \"time\")" in d or "(key, time)" in d for (d,) in idx), idx
    row = query(pg, 'select temp, seq, site, ok, tags, headers from readings '
                    'where "offset" = 4')[0]
    assert row == (24.5, 4, "plant-7", True, {"line": 4}, [["origin", "gw/4"]])
    # Values that do not fit a column's type are NULL there, never an error.
    assert query(pg, 'select temp, seq, ok from readings where "offset" = 30') == [
        (None, None, None)]
    assert query(pg, 'select seq from readings where "offset" = 31') == [(None,)]
    # docs/mirrors.md: the last reading per device ...
    last = query(pg, "select distinct on (key) key, \"offset\", value->>'temp' from readings "
                     "where topic = 'telemetry' order by key, time desc")
    assert [(k, o) for k, o, _ in last] == [("dev-0", 30), ("dev-1", 31), ("dev-2", 29)]
    # ... and the readings of one device in a time range.
    rng = query(pg, "select \"offset\" from readings where key = 'dev-1' and time >= "
                    "to_timestamp(1700000003) and time < to_timestamp(1700000013) "
                    "order by time")
    assert [o for (o,) in rng] == [4, 7, 10]


def test_values_the_server_refuses_are_kept_as_bytes_and_the_rest_as_jsonb(
        pg: PostgresServer) -> None:
    t = target(pg, "refused")
    bad = [b"{oops}", b'{"a": NaN}', b'{"a": "\\u0000"}', b'{"a": 1e999999}',
           b'["\\ud800"]', b"[" * 5000 + b"]" * 5000]
    records = [reading(0)] + [StoredRecord(i + 1, b"k", v, 0, ()) for i, v in enumerate(bad)]
    write(t, records)
    got = query(pg, 'select "offset", value is not null, value_bytes from refused order by 1')
    assert got[0][:2] == (0, True)
    assert [(o, j, bytes(b)) for o, j, b in got[1:]] == [
        (i + 1, False, v) for i, v in enumerate(bad)]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids,
                                                               max_size=3), max_leaves=8)
values = (st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode())
          | st.sampled_from([b'{"x": NaN}', b"{\"x\": \"\\u0000\"}", b"[1e99999]", b"{",
                             b'"\\udfff"', b"\xff{}", b"{}\x00", b"[" * 3000 + b"]" * 3000,
                             b'{"a": 1, "a": 2}', b"  [1, 2]  "]))
_examples = iter(range(1, 1 << 30))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(batch=st.lists(st.tuples(st.binary(max_size=12), values,
                                st.integers(-(1 << 63), (1 << 63) - 1),
                                st.lists(st.tuples(st.text(max_size=6), st.binary(max_size=8)),
                                         max_size=2)), min_size=1, max_size=8))
def test_hostile_records_are_stored_whole_and_read_back(pg: PostgresServer,
                                                        batch: list[Any]) -> None:
    """Any key, value, timestamp and header: one row each, the write never fails on
    content. A value is jsonb exactly when PostgreSQL takes it as JSON (then it reads
    back as PostgreSQL's normal form of it), else the very bytes; every value that is
    plain, checkable JSON (what devices send) is jsonb."""
    part = next(_examples)  # one partition per example: no table to recreate
    records = [StoredRecord(i, k, v, ts, tuple(h)) for i, (k, v, ts, h) in enumerate(batch)]
    write(target(pg, "fuzz"), records, partition=part)
    with pg.connect(row_factory=psycopg.rows.dict_row) as conn:
        # value as text: jsonb may hold what Python's json will not load (4301 digits)
        rows = conn.execute('select "offset", key, key_bytes, ts_ms, value_bytes, headers, '
                            'null as value, value::text as value_text from fuzz where '
                            'partition = %s order by "offset"', [part]).fetchall()
        assert [r["offset"] for r in rows] == list(range(len(records)))
        for r, rec in zip(rows, records, strict=True):
            assert record_of(r)[0::3] == (rec.offset, rec.timestamp)
            assert record_of(r)[1] == rec.key
            assert record_of(r)[4] == tuple(
                (n.encode("utf-8", "replace").decode().replace("\x00", "\ufffd"), v)
                for n, v in rec.headers)
            text = clean_text(rec.value)
            if r["value_bytes"] is not None:
                assert bytes(r["value_bytes"]) == rec.value
                checkable = True
                try:
                    parse_json(text or "")
                except ValueError:
                    checkable = False
                assert text is None or not checkable, rec.value
            else:
                normal = conn.execute("select %s::jsonb::text", [text]).fetchone()
                assert normal is not None and r["value_text"] == normal["text"]


def test_credentials_are_checked_and_never_shown(pg: PostgresServer, monkeypatch:
                                                 pytest.MonkeyPatch) -> None:
    def attempt(**kw: Any) -> Exception:
        t = PostgresTarget(pg.dsn, "creds", timeout_s=3, **kw)
        with pytest.raises((TargetRejected, TargetUnavailable)) as info:
            asyncio.run(t.open(TOPIC, 1))
        asyncio.run(t.close())
        return info.value

    wrong = attempt(password="not-the-password-91")
    assert isinstance(wrong, TargetRejected) and "password authentication" in str(wrong)
    assert "not-the-password-91" not in str(wrong) and PASSWORD not in str(wrong)
    missing = attempt(password_env="EDGESTREAM_TEST_PG_PW")
    assert isinstance(missing, TargetRejected) and "EDGESTREAM_TEST_PG_PW" in str(missing)
    monkeypatch.setenv("EDGESTREAM_TEST_PG_PW", PASSWORD)
    write(PostgresTarget(pg.dsn, "creds", password_env="EDGESTREAM_TEST_PG_PW"),
          [reading(0)])
    assert offsets(pg, "creds") == [0]
    # TLS options reach libpq: this server has no TLS, so "require" must fail, permanently.
    tls = attempt(password=PASSWORD, connect_kwargs={"sslmode": "require"})
    assert isinstance(tls, TargetRejected) and "SSL" in str(tls)

    url = f"postgresql://postgres:url-secret-55@127.0.0.1:{pg.port}/postgres"
    for dsn in (url, f"host=127.0.0.1 port={pg.port} user=postgres password=kv-secret-66"):
        cfg = parse_mirror("pg", {"topic": TOPIC, "target": "postgres", "dsn": dsn,
                                  "password": "cfg-secret-77"}, base_dir=HERE)
        shown = json.dumps(cfg.public()) + repr(cfg) + build_target(cfg).description
        for secret in ("url-secret-55", "kv-secret-66", "cfg-secret-77"):
            assert secret not in shown, shown


@pytest.mark.parametrize(("table", "error"), [
    ({"fields": {"temp": "float"}}, "fields.temp: must be one of"),
    ({"fields": {"offset": "bigint"}}, "fields.offset: must be an SQL name"),
    ({"fields": {"a b": "text"}}, "must be an SQL name"),
    ({"sslmode": "maybe"}, "sslmode: must be one of"),
    ({"table": "x; drop"}, "table: must be an SQL name"),
    ({"dsn": "postgresql://u:leak-88@h:5432/db?bogus=1&&"}, None),
    ({"dsn": "host='unterminated password=leak-88"}, "dsn: must be a postgresql:// URL"),
    ({"path": "x.db"}, "unknown key for a postgres mirror"),
])
def test_settings_are_checked_without_echoing_secrets(table: dict[str, Any],
                                                      error: str | None) -> None:
    raw = {"topic": TOPIC, "target": "postgres", **table}
    if error is None:
        with pytest.raises(ValueError) as info:
            parse_mirror("pg", raw, HERE)
        assert "leak-88" not in str(info.value)
        return
    with pytest.raises(ValueError, match=error) as info:
        parse_mirror("pg", raw, HERE)
    assert "leak-88" not in str(info.value)


def test_a_table_created_beforehand_partitioned_by_time_is_used_as_it_is(
        pg: PostgresServer) -> None:
    """The retention layout docs/mirrors.md recommends: monthly partitions plus DEFAULT;
    dropping an old partition is retention, and its rows are not written again."""
    with pg.connect() as conn:
        conn.execute(
            'CREATE TABLE parted (topic text NOT NULL, partition int NOT NULL, '
            '"offset" bigint NOT NULL, key text, key_bytes bytea, time timestamptz NOT NULL, '
            "ts_ms bigint NOT NULL, value jsonb, value_bytes bytea, headers jsonb, "
            'PRIMARY KEY (topic, partition, "offset", time)) PARTITION BY RANGE (time)')
        conn.execute("CREATE TABLE parted_old PARTITION OF parted "
                     "FOR VALUES FROM ('2023-11-01') TO ('2023-12-01')")
        conn.execute("CREATE TABLE parted_other PARTITION OF parted DEFAULT")
    t = target(pg, "parted")
    old = [reading(i) for i in range(10)]  # November 2023
    new = [StoredRecord(i, b"dev-1", b'{"temp": 1}', 1_800_000_000_000 + i, ())
           for i in range(10, 20)]
    write(t, old + new)
    assert query(pg, "select count(*) from parted_old") == [(10,)]
    with pg.connect() as conn:
        conn.execute("DROP TABLE parted_old")
    write(t, old + new)  # a replay after retention
    assert offsets(pg, "parted") == list(range(10, 20))
    assert position(t) == 20


def test_with_timescaledb_a_new_table_becomes_a_hypertable(pg: PostgresServer) -> None:
    """TimescaleDB is not packaged here: a stand-in ``create_hypertable`` records the
    call, which is what the target's detection and DDL depend on."""
    with pg.connect() as conn:
        conn.execute("create table hypertables (relation regclass, time_column name)")
        conn.execute("create function create_hypertable(relation regclass, "
                     "time_column_name name, if_not_exists boolean default false) "
                     "returns void language sql as "
                     "'insert into hypertables values (relation, time_column_name)'")
    try:
        write(target(pg, "ts_readings"), [reading(i) for i in range(5)])
        write(target(pg, "ts_plain", hypertable=False), [reading(0)])
        assert query(pg, "select relation::text, time_column::text from hypertables") == [
            ("ts_readings", "time")]
        pk = query(pg, "select pg_get_constraintdef(oid) from pg_constraint "
                       "where conrelid = 'ts_readings'::regclass and contype = 'p'")
        assert pk == [('PRIMARY KEY (partition, "offset", topic, "time")',)]
        assert offsets(pg, "ts_readings") == list(range(5))
    finally:
        with pg.connect() as conn:
            conn.execute("drop function create_hypertable(regclass, name, boolean)")


def test_the_dsn_own_options_are_kept(pg: PostgresServer) -> None:
    """libpq options from the DSN (here a search_path) reach the server untouched."""
    with pg.connect() as conn:
        conn.execute("create schema if not exists tele")
    dsn = pg.dsn + "?options=-csearch_path%3Dtele"
    write(PostgresTarget(dsn, "in_schema", password=PASSWORD), [reading(0), reading(1)])
    assert query(pg, "select count(*) from tele.in_schema") == [(2,)]
    assert query(pg, "select count(*) from tele.edgestream_positions") == [(1,)]


def test_copy_data_in_pieces_is_the_same_copy(pg: PostgresServer) -> None:
    """A large batch is sent in pieces (the event loop runs between them): the pieces
    make the very COPY data of the whole batch, from any first offset, on the fast path
    (usual records) and the general one (a plain-text value, a record without headers),
    and the server reads them into the same rows."""
    usual = [reading(i) for i in range(2500)]
    mixed = [*usual[:1200], StoredRecord(1200, b"k", b"plain text", 0, ()), *usual[1201:]]
    for records in (usual, mixed):
        for first in (0, 999, 1000, 2499):
            whole = copy_data(TOPIC, 0, records, first, {})
            assert b"".join(copy_chunks(TOPIC, 0, records, first, {})) == whole
    t = target(pg, "pieces")
    write(t, mixed)
    assert offsets(pg, "pieces") == list(range(2500))
    assert query(pg, 'select value_bytes from pieces where "offset" = 1200') == [
        (b"plain text",)]


def test_partitions_share_a_bounded_pool_of_connections(pg: PostgresServer) -> None:
    """Six partitions written at once over two connections: never a third backend, every
    row once, every position right; the table's creator is the first pooled connection."""
    t = target(pg, "pooled", connections=2)
    opened = 0
    connect = t._connect

    async def counted() -> Any:
        nonlocal opened
        opened += 1
        return await connect()

    t._connect = counted  # type: ignore[method-assign]

    async def partition(p: int) -> None:
        for b in range(0, 300, 50):
            await t.write(p, [StoredRecord(i, b"dev-%d" % p, b'{"p": %d}' % p, 1_700_000_000_000
                                           + i, ()) for i in range(b, b + 50)])
            await t.write(p, [StoredRecord(b, b"dev", b"{}", 0, ())])  # a replay: nothing
        assert await t.next_offset(p) == 300

    async def go() -> int:
        try:
            await t.open(TOPIC, 6)
            await asyncio.gather(*(partition(p) for p in range(6)))
            return query(pg, "select count(*) from pg_stat_activity where application_name "
                             "= 'edgestream-mirror'")[0][0]
        finally:
            await t.close()

    assert asyncio.run(go()) == 2
    assert opened == 2
    assert query(pg, 'select partition, count(*), count(distinct "offset"), min("offset"), '
                     'max("offset") from pooled group by 1 order by 1') == [
        (p, 300, 300, 0, 299) for p in range(6)]
    assert query(pg, "select count(*) from pg_stat_activity where application_name = "
                     "'edgestream-mirror'") == [(0,)]
    with pytest.raises(ValueError):
        target(pg, "pooled", connections=0)


@pytest.mark.parametrize(("partitions", "connections", "want"), [(3, 4, 3), (6, 2, 2), (1, 4, 1)])
def test_open_connects_ahead_for_the_partitions_within_the_bound(
        pg: PostgresServer, partitions: int, connections: int, want: int) -> None:
    """While the table is created the pool opens the connections the first writes will
    take, never more than the partitions need or the bound allows."""
    t = target(pg, f"ahead{partitions}", connections=connections)

    async def go() -> tuple[int, int]:
        try:
            await t.open(TOPIC, partitions)
            held = query(pg, "select count(*) from pg_stat_activity where application_name "
                             "= 'edgestream-mirror'")[0][0]
            await asyncio.gather(*(t.write(p, [reading(0)]) for p in range(partitions)))
            return held, len(t._open)
        finally:
            await t.close()

    assert asyncio.run(go()) == (want, want)
