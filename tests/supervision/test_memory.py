"""The malloc settings and the memory log the leak runs rely on."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pytest

from supervision import limit_malloc, memory_figures, start_memory_log


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
