"""The lean uplink client (edge_agent.uplink_conn): keep-alive, bounds, hostile replies.

The servers here are small asyncio servers on loopback written to misbehave on purpose;
the forwarder tests run the same client against the real broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.outgoing import Outgoing
from edge_agent.uplink_conn import ConnectionFailed, LeanClient
from edge_agent.uplink_http import HttpUplink

OK = (b"HTTP/1.1 200 OK\r\ncontent-type: application/cbor\r\ncontent-length: 2\r\n\r\nhi")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[tuple[int, list[int]]]:
    """A loopback server; yields (port, [connections accepted])."""
    accepted = [0]

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        try:
            await handler(r, w)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()


async def read_request(r: asyncio.StreamReader) -> bytes:
    head = await r.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return await r.readexactly(length)


async def answer_each(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while True:
        await read_request(r)
        w.write(OK)
        await w.drain()


def test_requests_share_one_keep_alive_connection() -> None:
    async def main() -> None:
        async with serving(answer_each) as (port, accepted):
            client = LeanClient(f"http://127.0.0.1:{port}", {"accept": "x"}, timeout_s=5)
            for i in range(20):
                reply = await client.post("/v1/ingest/t", b"body %d" % i, {})
                assert (reply.status, reply.body) == (200, b"hi")
                assert reply.header(b"content-type") == b"application/cbor"
            await client.aclose()
            assert accepted[0] == 1

    asyncio.run(main())


def test_a_connection_the_server_closed_is_not_reused() -> None:
    async def once(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(OK)
        await w.drain()  # then close: a keep-alive timeout on the server side

    async def main() -> None:
        async with serving(once) as (port, accepted):
            client = LeanClient(f"http://127.0.0.1:{port}", {}, timeout_s=5)
            for _ in range(3):
                assert (await client.post("/x", b"b", {})).status == 200
                await asyncio.sleep(0.05)  # the close reaches us before the next request
            await client.aclose()
            assert accepted[0] == 3

    asyncio.run(main())


async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Reads the request, never answers (a server that died behind a proxy)."""
    await r.read(1 << 20)
    await asyncio.sleep(30)


def test_a_silent_server_times_out() -> None:
    async def main() -> None:
        async with serving(silent) as (port, _):
            client = LeanClient(f"http://127.0.0.1:{port}", {}, timeout_s=0.3)
            with pytest.raises(ConnectionFailed, match="TimeoutError"):
                await client.post("/x", b"b", {})
            await client.aclose()

    asyncio.run(main())


def test_abort_ends_the_requests_in_flight_at_once() -> None:
    """A server that died under its connections (behind a proxy that keeps them open)
    never answers: ``abort`` (a failed request calls it) ends every request in flight
    now, not after ``timeout_s``; the client stays usable."""
    async def main() -> None:
        async with serving(silent) as (port, accepted):
            client = LeanClient(f"http://127.0.0.1:{port}", {}, timeout_s=20)
            posts = [asyncio.create_task(client.post("/x", b"b", {})) for _ in range(3)]
            async with asyncio.timeout(10):
                while accepted[0] < 3:  # all three on the wire
                    await asyncio.sleep(0.01)
            start = asyncio.get_running_loop().time()
            client.abort()
            for post in posts:
                with pytest.raises(ConnectionFailed):
                    await asyncio.wait_for(post, 5)
            assert asyncio.get_running_loop().time() - start < 2.0
            await client.aclose()

    asyncio.run(main())


def test_a_failure_ends_only_the_requests_sent_before_it_and_does_not_cascade() -> None:
    """Requests 1 and 2 hang, 3 fails (its connection closed without a reply), 4 was
    sent after 3: the failure ends 1 and 2 at once; their ending must not end 4 (a
    retry to a node that is up again), which gets its reply."""
    fail_3, answer_4 = asyncio.Event(), asyncio.Event()
    counts: list[list[int]] = []  # serving's count of connections accepted

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nth = counts[0][0]
        await read_request(r)
        if nth == 3:
            await fail_3.wait()
            return  # closed without a reply
        if nth == 4:
            await answer_4.wait()
            w.write(OK)
            await w.drain()
        await asyncio.sleep(30)

    async def main() -> None:
        async with serving(handler) as (port, counter):
            counts.append(counter)
            client = LeanClient(f"http://127.0.0.1:{port}", {}, timeout_s=20)
            posts = []
            for n in range(1, 5):
                posts.append(asyncio.create_task(client.post("/x", b"b", {})))
                async with asyncio.timeout(10):
                    while counter[0] < n:  # request n on its own connection, in order
                        await asyncio.sleep(0.01)
            fail_3.set()
            async with asyncio.timeout(5):
                for post in posts[:3]:
                    with pytest.raises(ConnectionFailed):
                        await post
            await asyncio.sleep(0)  # the ended requests' failures are all handled now
            assert not posts[3].done()
            answer_4.set()
            reply = await asyncio.wait_for(posts[3], 5)
            assert reply.status == 200 and reply.body == b"hi"
            await client.aclose()

    asyncio.run(main())


def test_a_reply_over_the_cap_is_refused() -> None:
    async def huge(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100_000)
        await w.drain()

    async def main() -> None:
        async with serving(huge) as (port, _):
            client = LeanClient(f"http://127.0.0.1:{port}", {}, timeout_s=5,
                                max_reply_bytes=1000)
            with pytest.raises(ConnectionFailed, match="over 1000 bytes"):
                await client.post("/x", b"b", {})
            await client.aclose()

    asyncio.run(main())


def test_nothing_listening_is_a_connection_failure() -> None:
    async def main() -> None:
        async with serving(answer_each) as (port, _):
            pass  # closed again: nothing listens on port now
        client = LeanClient(f"http://127.0.0.1:{port}", {}, timeout_s=2)
        with pytest.raises(ConnectionFailed):
            await client.post("/x", b"b", {})

    asyncio.run(main())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reply=st.one_of(
    st.binary(max_size=400),
    st.builds(lambda status, extra, body: b"HTTP/1.1 %d X\r\n%s\r\n%s" % (status, extra, body),
              st.integers(0, 999),
              st.sampled_from([b"", b"content-length: 5\r\n", b"content-length: -1\r\n",
                               b"transfer-encoding: chunked\r\n", b"content-length: 99\r\n",
                               b"transfer-encoding: chunked\r\ncontent-length: 3\r\n"]),
              st.binary(max_size=200))))
def test_any_reply_bytes_end_in_a_reply_or_a_connection_failure(reply: bytes) -> None:
    async def hostile(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(reply)
        await w.drain()

    async def main() -> None:
        async with serving(hostile) as (port, _):
            client = LeanClient(f"http://127.0.0.1:{port}", {}, timeout_s=2)
            try:
                got = await client.post("/x", b"b", {})
            except ConnectionFailed:
                pass
            else:
                assert 100 <= got.status <= 999
            await client.aclose()

    asyncio.run(main())


def test_a_proxy_in_the_environment_keeps_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                 "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert HttpUplink("http://cloud.example:8080").client == "lean"
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert HttpUplink("http://cloud.example:8080").client == "httpx"
    monkeypatch.setenv("NO_PROXY", "cloud.example")
    assert HttpUplink("http://cloud.example:8080").client == "lean"
    assert HttpUplink("http://cloud.example:8080", client="httpx").client == "httpx"


@pytest.mark.parametrize("client", ["lean", "httpx"])
@pytest.mark.parametrize(("status", "body", "raised", "text"), [
    (200, b"\xff\x00 not cbor", "RetryableUplinkError", "unreadable reply"),
    (503, b'{"error": "busy", "field": null}', "RetryableUplinkError", "busy"),
    (400, b'{"error": "bad", "field": "records"}', "FatalUplinkError", "bad (field records)"),
    (400, b"[" * 100_000, "FatalUplinkError", "[[["),
])
def test_both_clients_sort_replies_the_same(client: str, status: int, body: bytes,
                                            raised: str, text: str) -> None:
    from uplink import Batch, UplinkRecord

    async def reply(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await read_request(r)
            w.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body))
            await w.drain()

    batch = Batch("e", "s", "g", 0, 0, (UplinkRecord(0, b"k", 1, b"v"),))

    async def main() -> None:
        async with serving(reply) as (port, _):
            up = HttpUplink(f"http://127.0.0.1:{port}", client=client)
            try:
                with pytest.raises(Exception) as info:
                    await up.send("t", Outgoing.encode(batch, "none"))
                assert type(info.value).__name__ == raised
                assert text in str(info.value)
            finally:
                await up.aclose()

    asyncio.run(main())


def test_a_client_outliving_its_event_loop_opens_a_new_connection() -> None:
    async def post(client: LeanClient) -> int:
        return (await client.post("/x", b"b", {})).status

    async def serve_twice() -> None:
        async with serving(answer_each) as (port, accepted):
            client = LeanClient(f"http://127.0.0.1:{port}", {}, timeout_s=5)
            assert await post(client) == 200
            # the next "run" of the client happens on another event loop (a thread here)
            assert await asyncio.to_thread(asyncio.run, post(client)) == 200
            assert accepted[0] == 2
            await client.aclose()

    asyncio.run(serve_twice())
