"""The local consumers' endpoint under hostile input: any query string is answered 200,
400, 404 or 416 (never a 5xx), at once; long polls are bounded in time and in number and
are woken by the stream's bell, not by polling."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.local_read import MAX_WAITERS, LocalReader
from edge_agent.status import create_app
from shared_log import CommitMode, CommitPolicy, Log, LogConfig, Record


def app_with_log(tmp: Path, n: int = 30) -> tuple[object, LocalReader, Log]:
    log = Log(tmp / "s", LogConfig(commit=CommitPolicy(CommitMode.EVERY_BATCH)))
    if n:
        log.append([Record(b"d%d" % (i % 3), b'{"i":%d}' % i, i, (("src", b"%d-%d" % (i, i)),))
                    for i in range(n)])
    reader = LocalReader()
    reader.add("s", log)
    app = create_app(lambda: {"problems": []}, lambda: (b"", "text/plain"), 300.0, reader)
    return app, reader, log


def client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                             base_url="http://agent")


def test_reads_by_offset(tmp_path: Path) -> None:
    app, _r, log = app_with_log(tmp_path)

    async def go() -> None:
        async with client(app) as c:
            r = await c.get("/v1/streams/s/records", params={"offset": 10, "max_records": 5})
            body = r.json()
            assert r.status_code == 200
            assert [x["offset"] for x in body["records"]] == [10, 11, 12, 13, 14]
            assert body["records"][0] == {"offset": 10, "timestamp": 10, "key": "d1",
                                          "headers": {"src": "10-10"}, "value": '{"i":10}'}
            assert body["next_offset"] == 15 and body["durable_offset"] == 30
            r = await c.get("/v1/streams/s/records", params={"offset": 30})
            assert r.json()["records"] == [] and r.json()["next_offset"] == 30
    asyncio.run(go())
    log.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["offset", "wait_ms", "max_records", "x"]),
                       st.one_of(st.text(max_size=25), st.integers(-2**70, 2**70).map(str)),
                       max_size=4),
       st.text(max_size=12))
def test_hostile_queries_never_5xx(tmp_path_factory: object, params: dict[str, str],
                                   name: str) -> None:
    tmp = tmp_path_factory.mktemp("q")  # type: ignore[attr-defined]
    app, _r, log = app_with_log(tmp, 5)
    params = {k: v for k, v in params.items() if k != "wait_ms" or not (v.isascii() and v.isdigit())
              or int(v) > 30_000}  # real waits are the test below's business

    async def go() -> None:
        async with client(app) as c:
            t0 = time.monotonic()
            path = "/v1/streams/" + (quote(name, safe="") or "s") + "/records"
            r = await c.get(path, params=params)
            assert r.status_code in (200, 400, 404, 416), r.text  # 404: also a name with '/'
            assert time.monotonic() - t0 < 2
            if r.status_code != 200 and "json" in r.headers["content-type"]:
                assert r.json()["field"] in ("offset", "wait_ms", "max_records", "name")
    asyncio.run(go())
    log.close()


def test_long_polls_wake_on_the_bell_and_are_bounded(tmp_path: Path) -> None:
    app, reader, log = app_with_log(tmp_path, 0)
    _log, bell = reader.logs["s"]

    async def go() -> None:
        async with client(app) as c:
            url = "/v1/streams/s/records?offset=0&wait_ms=20000"
            polls = [asyncio.create_task(c.get(url)) for _ in range(MAX_WAITERS)]
            for _ in range(200):
                if reader.waiters == MAX_WAITERS:
                    break
                await asyncio.sleep(0.01)
            assert reader.waiters == MAX_WAITERS
            over = await c.get(url)
            assert over.status_code == 503 and over.json()["field"] == "wait_ms"
            t0 = time.monotonic()
            log.append([Record(b"d", b"new", 1, ())])
            bell.ring()
            done = await asyncio.wait_for(asyncio.gather(*polls), 10)
            assert time.monotonic() - t0 < 5
            assert all([x["value"] for x in r.json()["records"]] == ["new"] for r in done)
            assert reader.waiters == 0
            t0 = time.monotonic()
            r = await c.get("/v1/streams/s/records?offset=1&wait_ms=200")
            assert r.json()["records"] == [] and 0.15 < time.monotonic() - t0 < 5
            bad = await c.get("/v1/streams/s/records?offset=0&wait_ms=30001")
            assert bad.status_code == 400
    asyncio.run(go())
    log.close()


def test_deleted_offsets_answer_416(tmp_path: Path) -> None:
    log = Log(tmp_path / "s", LogConfig(segment_bytes=1024,
                                        commit=CommitPolicy(CommitMode.EVERY_BATCH)))
    for i in range(100):
        log.append([Record(b"d", b"x" * 40, i, ())])
    assert log.delete_before(60) > 0
    reader = LocalReader()
    reader.add("s", log)

    async def go() -> None:
        status, body = await reader.read("s", {"offset": "0"})
        assert status == 416 and body["start_offset"] == log.start_offset > 0
        status, body = await reader.read("s", {"offset": str(log.start_offset)})
        assert status == 200 and body["records"][0]["offset"] == log.start_offset
    asyncio.run(go())
    log.close()
