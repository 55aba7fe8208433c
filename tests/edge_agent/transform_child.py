"""A transform runner as a process of its own, for the kill -9 tests.

``python transform_child.py <data_dir> <pace_ms>``: opens the stream ``telemetry`` and
its derived streams in ``data_dir`` (the config of ``transform_testing.config``), then
runs ``TransformRunner.run`` - checkpoints every 50 ms - until killed. ``pace_ms`` slows
each step so that windows are open across many kills.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent.parent)]  # the helpers, and the repository

from transform_testing import open_all  # noqa: E402


async def main(data: Path, pace_s: float) -> None:
    _cfg, runner, _raw, _outs = open_all(data, batch=100)
    step = runner.step

    def paced() -> int:
        n = step()
        time.sleep(pace_s)
        return n
    runner.step = paced  # type: ignore[method-assign]
    print("started", flush=True)
    await runner.run(asyncio.Event(), lambda: None, checkpoint_s=0.05)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), float(sys.argv[2]) / 1000))
