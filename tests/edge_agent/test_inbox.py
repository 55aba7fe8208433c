"""The inbox's gate (edge_agent/inbox.py): the first reading of a batch sets the time the
pipeline wakes (one wake-up per batch), a full batch or a hurry wakes it at once, and
readings taken early leave no stray wake-up behind."""

from __future__ import annotations

import asyncio
import time

from edge_agent.inbox import Inbox


def _msg(mid: int) -> tuple[str, bytes, int, int, int]:
    return ("devices/d/telemetry", b"{}", 1, mid, 1)


def test_the_gate_wakes_the_pipeline_once_at_its_time_or_at_a_full_batch() -> None:
    async def main() -> None:
        inbox = Inbox()
        due = [time.monotonic() + 0.3]
        inbox.set_gate(lambda: due[0], limit=3)
        inbox.submit(_msg(1))
        inbox.submit(_msg(2))
        await asyncio.sleep(0.05)
        assert not inbox.wake.is_set()  # gathering until the gate's time
        inbox.submit(_msg(3))  # the limit: at once
        assert inbox.wake.is_set()
        inbox.wake.clear()
        assert [m[3] for m in inbox.take(10)] == [1, 2, 3]
        await asyncio.sleep(0.35)
        assert not inbox.wake.is_set()  # the timer went with the full batch

        start = time.monotonic()
        due[0] = start + 0.1
        inbox.submit(_msg(4))
        assert not inbox.wake.is_set()
        await asyncio.wait_for(inbox.wake.wait(), 5)
        assert time.monotonic() - start >= 0.1 * 0.9  # woken at the gate, not before
        inbox.wake.clear()
        inbox.take(10)

        due[0] = time.monotonic() - 1  # the gate is open: at once
        inbox.submit(_msg(5))
        assert inbox.wake.is_set()
        inbox.wake.clear()
        inbox.take(10)

        due[0] = time.monotonic() + 0.1  # taken by a busy pipeline before its time
        inbox.submit(_msg(6))
        assert [m[3] for m in inbox.take(10)] == [6]
        await asyncio.sleep(0.2)
        assert not inbox.wake.is_set()  # no stray wake-up

        inbox.submit(_msg(7))  # gathering again; a hurry ends it
        inbox.hurry()
        assert inbox.wake.is_set() and inbox.urgent

    asyncio.run(main())


def test_a_restarted_pipeline_is_woken_by_waiting_readings_unless_they_gather() -> None:
    async def main() -> None:
        inbox = Inbox()
        inbox.resume()
        assert not inbox.wake.is_set()  # nothing waits
        inbox.messages.append(_msg(1))  # left by a pipeline that failed
        inbox.resume()
        assert inbox.wake.is_set()
        inbox.wake.clear()
        inbox.take(10)
        inbox.set_gate(lambda: time.monotonic() + 0.1, limit=10)
        inbox.submit(_msg(2))
        inbox.resume()
        assert not inbox.wake.is_set()  # its timer wakes the pipeline
        await asyncio.wait_for(inbox.wake.wait(), 5)

    asyncio.run(main())
