"""Crash-only supervision of long-lived asyncio tasks (G9: nothing dies silently).

Strategy: every long-lived task of a service (the agent's per-stream ingest, forwarder,
status server, checkpoint and sampling loops and MQTT sessions; the broker's ingest
checkpoints, retention and group expiry) is started through
``Supervisor.spawn`` with a *factory*: a function returning a fresh coroutine. When the
coroutine ends for any reason other than a stop (an exception, or returning at all: these
tasks are meant to run until cancelled), the supervisor

* counts it (``restarts[(task, reason)]``, exported as ``edge_task_restarts_total`` and
  ``broker_task_restarts_total``),
* records the error, so health turns unhealthy with the reason while the task is down and
  for a window after its last failure (``task_problems``),
* calls the task's ``on_failure`` hook (Erlang's ``rest_for_one``: e.g. a failed ingest
  pipeline reconnects its MQTT session so Mosquitto redelivers what it was holding), and
* restarts it after an exponential backoff with full jitter (0.1 s doubling up to
  ``status.restart_max_s``); a task that then runs for ``_STABLE_S`` resets its backoff.

The supervisor holds no state of the tasks themselves: each factory resumes from its
component's own state, as after a crash (crash-only design).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Factory = Callable[[], Coroutine[Any, Any, Any]]

_BASE_S = 0.1
_STABLE_S = 30.0  # a run this long resets the backoff


@dataclass
class TaskState:
    """What health and metrics see of one supervised task."""

    name: str
    running: bool = False
    failures: int = 0
    last_error: str = ""
    last_failure_at: float | None = None  # time.time()
    down_since: float | None = None  # set while waiting to restart


def failure_reason(exc: BaseException | None) -> str:
    """A low-cardinality label for a failure: the exception's type, or ``returned``."""
    return "returned" if exc is None else type(exc).__name__


class Supervisor:
    """Starts tasks, restarts them when they end unexpectedly, and reports on them."""

    def __init__(self, *, backoff_max_s: float = 30.0) -> None:
        self.backoff_max_s = backoff_max_s
        self.states: dict[str, TaskState] = {}
        self.restarts: Counter[tuple[str, str]] = Counter()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        #: set when the owner stops: a task that ends from then on is not restarted
        self.stopping = False

    def spawn(self, name: str, factory: Factory, *,
              on_failure: Callable[[], None] | None = None) -> asyncio.Task[None]:
        """Run ``factory()`` as task ``name`` under supervision (names are unique)."""
        if name in self.tasks:
            raise ValueError(f"task {name!r} is already supervised")
        self.states[name] = TaskState(name)
        task = asyncio.create_task(self._supervise(name, factory, on_failure), name=name)
        self.tasks[name] = task
        return task

    async def _supervise(self, name: str, factory: Factory,
                         on_failure: Callable[[], None] | None) -> None:
        st = self.states[name]
        attempt = 0
        while True:
            started = time.monotonic()
            st.running, st.down_since = True, None
            exc: BaseException | None = None
            try:
                await factory()
            except asyncio.CancelledError:
                st.running = False
                raise
            except (Exception, SystemExit) as e:  # uvicorn exits on a failed startup
                exc = e
            st.running = False
            if self.stopping:
                return
            self._failed(st, exc)
            if on_failure is not None:
                try:
                    on_failure()
                except Exception:
                    log.exception("task %s: its failure hook failed", name)
            attempt = 1 if time.monotonic() - started >= _STABLE_S else attempt + 1
            delay = random.uniform(0, min(self.backoff_max_s, _BASE_S * 2 ** min(attempt, 16)))
            log.info("task %s: restarting in %.2fs", name, delay)
            await asyncio.sleep(delay)
            if self.stopping:
                return

    def _failed(self, st: TaskState, exc: BaseException | None) -> None:
        reason = failure_reason(exc)
        now = time.time()
        st.failures += 1
        st.last_error = "ended unexpectedly" if exc is None else f"{reason}: {exc}"[:500]
        st.last_failure_at = st.down_since = now
        self.restarts[(st.name, reason)] += 1
        log.error("task %s failed (%s); restarting with backoff", st.name, st.last_error,
                  exc_info=exc)

    def status(self) -> list[dict[str, Any]]:
        by_task: dict[str, dict[str, int]] = {}
        for (task, reason), n in self.restarts.items():
            by_task.setdefault(task, {})[reason] = n
        return [{"name": s.name, "running": s.running, "failures": s.failures,
                 "restarts": by_task.get(s.name, {}), "last_error": s.last_error,
                 "last_failure_at": s.last_failure_at, "down_since": s.down_since}
                for s in self.states.values()]

    def cancel(self, names: set[str] | None = None) -> None:
        """Cancel the tasks named (all when None); a cancel is a stop, never a failure."""
        self.stopping = True
        for name, task in self.tasks.items():
            if names is None or name in names:
                task.cancel()

    async def wait(self) -> None:
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


def task_problems(tasks: list[dict[str, Any]], now: float, window_s: float) -> list[str]:
    """Health rule: a task is a problem while it is down, and for ``window_s`` after it
    last failed (a crash loop shows even when it is caught between restarts)."""
    out = []
    for t in tasks:
        at = t.get("last_failure_at")
        if at is None:
            continue
        down = not t.get("running") and t.get("down_since") is not None
        if down or now - at < window_s:
            state = "down, restarting" if down else "restarted"
            out.append(f"task {t['name']}: {state} after {t.get('failures', 0)} failure(s), "
                       f"last {now - at:.0f}s ago: {t.get('last_error') or 'unknown'}")
    return out
