"""A throwaway PostgreSQL server for the tests: Debian's binaries, a free loopback port,
data in a temp dir, never the machine's own cluster.

Strategy: ``initdb`` runs once per test process into a template (password auth on TCP,
so credentials are really checked), and every server copies it: a new cluster costs a
directory copy, not an initdb. PostgreSQL refuses to run as root, so under root the
server runs as the ``postgres`` system user (created by the Debian package) in a temp dir
outside pytest's root-only tmp_path. The postmaster leads its own process group and
``kill()`` SIGKILLs the whole group (backends included), as a crash would; a watchdog
process kills the group and removes its directory if the test process itself dies, so
an interrupted run leaves no server behind (only the small template directory).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.helpers import free_port

USER = "postgres"
PASSWORD = "pg-secret-7f3a"
_template: Path | None = None
_WATCHDOG = """
import os, shutil, signal, sys, time
parent, group, data = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
while alive(group):
    if not alive(parent):
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(1)
        shutil.rmtree(data, ignore_errors=True)
        break
    time.sleep(0.5)
"""


def pg_bin() -> Path:
    """Debian's PostgreSQL binaries (``apt-get install postgresql``; .ci/run does it)."""
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").exists() and (d / "postgres").exists():
            return d
    raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")


def _as_postgres() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam(USER)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam(USER)
        for root, dirs, files in os.walk(path):
            for n in [root, *(os.path.join(root, x) for x in dirs + files)]:
                os.chown(n, pw.pw_uid, pw.pw_gid)


def _cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def template() -> Path:
    """An initdb'd cluster to copy (once per process, removed at exit)."""
    global _template
    if _template is None:
        base = Path(tempfile.mkdtemp(prefix="edgestream-pgtemplate-"))
        atexit.register(_cleanup, base)
        os.chmod(base, 0o755)
        (base / "pw").write_text(PASSWORD)
        _own(base)
        subprocess.run([str(pg_bin() / "initdb"), "-D", str(base / "data"), "-U", USER,
                        "--auth-local=trust", "--auth-host=scram-sha-256",
                        f"--pwfile={base / 'pw'}", "-E", "UTF8", "--locale=C", "-N"],
                       check=True, capture_output=True, **_as_postgres())
        _template = base / "data"
    return _template


class PostgresServer:
    """One cluster on a free port; ``start``/``kill`` as often as a test likes."""

    def __init__(self, fsync: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="edgestream-pg-"))
        os.chmod(self.dir, 0o755)
        shutil.copytree(template(), self.dir / "data")
        os.chmod(self.dir / "data", 0o700)
        _own(self.dir)
        self.port = free_port()
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """Without the password (the tests pass it separately, as a config would)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def connect(self, **kw: Any) -> Any:
        import psycopg
        return psycopg.connect(self.dsn, password=PASSWORD, connect_timeout=3, **kw)

    def _ready(self) -> bool:
        import psycopg
        try:
            self.connect().close()
            return True
        except psycopg.OperationalError:
            return False

    def start(self) -> PostgresServer:
        log = open(self.dir / "postgres.out", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [str(pg_bin() / "postgres"), "-D", str(self.dir / "data"), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
             "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "max_connections=40",
             "-c", "shared_buffers=64MB"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **_as_postgres())
        log.close()
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.proc.pid),
             str(self.dir)],
            start_new_session=True)
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("postgres did not start:\n" + (
                    self.dir / "postgres.out").read_text(errors="replace")[-3000:])
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend (a crash, not a shutdown)."""
        if self.proc is None:
            return
        pid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        self.proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # backends are the group too: wait them out
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait(5)
        self.proc = None

    def close(self) -> None:
        self.kill()
        _cleanup(self.dir)
