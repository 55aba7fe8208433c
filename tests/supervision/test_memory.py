"""The malloc settings and the memory log the leak runs rely on."""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from pathlib import Path

import pytest

from supervision import (
    FullCollections,
    heap_free,
    limit_malloc,
    memory_figures,
    start_heap_trimmer,
    start_memory_log,
    trim_heap,
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_limit_malloc_is_taken_by_glibc() -> None:
    assert limit_malloc() is True


def test_memory_figures_tell_python_objects_from_the_heap() -> None:
    before = memory_figures()
    hoard = [object() for _ in range(50_000)]
    after = memory_figures()
    assert after["rss"] > 0 and after["py_blocks"] >= before["py_blocks"] + 45_000
    if platform.libc_ver()[0] == "glibc":
        assert after["heap_in_use"] > 0
    del hoard


def test_memory_log_is_off_unless_asked_then_writes_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMORY_LOG_DIR", raising=False)
    assert start_memory_log("agent") is None
    monkeypatch.setenv("MEMORY_LOG_DIR", str(tmp_path / "mem"))
    monkeypatch.setenv("MEMORY_LOG_EVERY_S", "0.05")
    assert start_memory_log("agent") is not None
    path = tmp_path / "mem" / f"memory-agent-{os.getpid()}.jsonl"
    deadline = time.monotonic() + 20
    lines: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(t) for t in path.read_text().splitlines() if t.endswith("}")]
            if len(lines) >= 3:
                break
        time.sleep(0.05)
    assert lines and all(x["pid"] == os.getpid() for x in lines)
    assert len(lines) >= 3 and all(x["py_blocks"] > 0 for x in lines)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Burst:
    """64 MB of heap chunks, touched, then freed under one chunk that stays: what a burst
    leaves behind. glibc's own trim gives back only the heap's top, so the RSS stays."""

    SIZE, COUNT = 64 * 1024, 1024  # under the mmap threshold: heap chunks

    def __enter__(self) -> _Burst:
        import ctypes
        import ctypes.util

        self.libc = libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        blocks = [libc.malloc(self.SIZE) for _ in range(self.COUNT)]
        self.pin = libc.malloc(self.SIZE)
        for b in blocks:
            ctypes.memset(b, 1, self.SIZE)
        for b in blocks:
            libc.free(b)
        self.total = self.SIZE * self.COUNT
        return self

    def __exit__(self, *exc: object) -> None:
        self.libc.free(self.pin)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_trim_heap_returns_free_chunks_below_a_live_one() -> None:
    with _Burst() as burst:
        free = heap_free()
        assert free is not None and free >= burst.total // 2
        assert trim_heap(min_free=free + 1) is False  # under its threshold: not run
        before = _rss()
        assert trim_heap(min_free=1024 * 1024) is True
        assert before - _rss() >= burst.total // 2


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_heap_trimmer_gives_a_burst_back_in_the_background() -> None:
    stop = threading.Event()
    with _Burst() as burst:
        before = _rss()
        thread = start_heap_trimmer(every_s=0.02, min_free=1024 * 1024, stop=stop)
        assert thread is not None and thread.daemon
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and before - _rss() < burst.total // 2:
                time.sleep(0.02)
            assert before - _rss() >= burst.total // 2
        finally:
            stop.set()
            thread.join(timeout=5)
    assert not thread.is_alive()


def test_full_collections_free_old_cyclic_garbage_on_the_loop() -> None:
    """With automatic collection off (what the servers' raised thresholds amount to for
    an old cycle), a cycle stays until ``FullCollections`` runs; cancel stops it."""
    import asyncio
    import gc
    import weakref

    class Node:
        def __init__(self) -> None:
            self.me = self

    async def run() -> int:
        loop = asyncio.get_running_loop()
        ref = weakref.ref(Node())  # a cycle, unreachable at once
        collections = FullCollections(loop, every_s=0.05)
        try:
            deadline = time.monotonic() + 10
            while ref() is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert ref() is None
        finally:
            collections.cancel()
        runs = collections.runs
        await asyncio.sleep(0.2)
        assert collections.runs == runs  # cancelled: no more runs
        return runs

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        assert asyncio.run(run()) >= 1
    finally:
        if was_enabled:
            gc.enable()
