"""A test run killed with SIGKILL takes the servers its fixtures started with it
(``tests.helpers.die_with_parent``): none is left listening on the machine."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from tests.helpers import wait_for

_RUN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from tests.helpers import Server
    server = Server([sys.executable, "-c", "import time; time.sleep(120)"], 0,
                    Path(sys.argv[1]), ready=lambda: True).start()
    print(server.proc.pid, flush=True)
    time.sleep(120)
""")


def test_a_server_dies_with_a_killed_test_run(tmp_path: Path) -> None:
    run = subprocess.Popen([sys.executable, "-c", _RUN, str(tmp_path / "server.out")],
                           stdout=subprocess.PIPE, start_new_session=True)
    server: psutil.Process | None = None
    try:
        assert run.stdout is not None
        server = psutil.Process(int(run.stdout.readline()))
        assert server.is_running() and server.ppid() == run.pid
        run.send_signal(signal.SIGKILL)
        run.wait(10)
        wait_for(lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE,
                 10, 0.05, "the server to die with the run")
    finally:
        run.kill()
        if server is not None:
            with contextlib.suppress(psutil.Error):
                server.kill()
