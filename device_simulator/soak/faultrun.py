"""Plays a fault schedule against a running ``Stack``, from the main thread.

Strategy: each ``Fault`` becomes two actions, its start and its end (kill / start again,
cut / restore, fill / free), run in time order; between actions the runner watches the
roles, and one that exited without being killed is a finding: recorded with its log tail
and restarted so the run goes on (the verdict fails on it). ``heal`` ends every fault
still active, so the drain at the end starts from a whole pipeline.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .schedule import Fault
from .stack import Stack


@dataclass
class FaultLog:
    done: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class FaultRunner:
    def __init__(self, stack: Stack, faults: list[Fault], t0: float,
                 progress: Callable[[], str] = lambda: "", every_s: float = 30.0) -> None:
        self.stack, self.faults, self.t0 = stack, faults, t0
        self.progress, self.every_s = progress, every_s
        self._next_progress = time.monotonic() + every_s
        self.log = FaultLog()
        self.down: set[str] = set()  # roles stopped on purpose, to start again
        self._actions: list[tuple[float, int, Callable[[], None]]] = []
        nth: Counter[str] = Counter()
        for i, f in enumerate(faults):
            begin, end = self._verbs(f, nth[f.kind])
            nth[f.kind] += 1
            self._actions.append((f.at, 2 * i, begin))
            self._actions.append((f.at + f.duration, 2 * i + 1, end))
        self._actions.sort(key=lambda a: (a[0], a[1]))

    def _role(self, f: Fault, nth: int) -> str | None:
        """The process a kill hits; in cluster mode the ``nth`` broker kill hits the
        broker nodes in turn, the ``nth`` NATS kill the NATS nodes in turn."""
        if f.kind == "broker_kill":
            return list(self.stack.brokers)[nth % len(self.stack.brokers)]
        if f.kind == "nats_kill":
            if not self.stack.nats:
                raise ValueError("nats_kill needs cluster mode (--cluster)")
            return f"nats-{nth % len(self.stack.nats) + 1}"
        return {"agent_kill": "agent", "mosquitto_restart": "mosquitto",
                "mirror_kill": "mirror"}.get(f.kind) or (
            f"member-{f.target}" if f.kind == "consumer_kill" else None)

    def _verbs(self, f: Fault, nth: int) -> tuple[Callable[[], None], Callable[[], None]]:
        role, stack = self._role(f, nth), self.stack
        proxies = stack.proxies
        if role is not None:
            def begin() -> None:
                proc = stack.procs[role]
                if role == "mosquitto":  # a clean restart: see configs.mosquitto_conf
                    proc.stop()
                    ok = True
                else:
                    ok = proc.kill()
                self.down.add(role)
                (self.log.done if ok else self.log.skipped)[f.kind] += 1

            def end() -> None:
                self.down.discard(role)
                stack.procs[role].start()
            return begin, end
        if f.kind == "uplink_cut":  # every broker node out of the agent's reach
            def cut() -> None:
                for proxy in proxies:
                    proxy.down()
                self.log.done[f.kind] += 1

            def restore() -> None:
                for proxy in proxies:
                    proxy.up()
            return cut, restore
        if f.kind == "slow_link":
            def slow() -> None:
                for proxy in proxies:
                    proxy.delay_s = f.level
                self.log.done[f.kind] += 1

            def fast() -> None:
                for proxy in proxies:
                    proxy.delay_s = 0.0
            return slow, fast
        if f.kind == "disk_full":
            def fill() -> None:
                if stack.disk.available:
                    stack.disk.fill()
                    self.log.done[f.kind] += 1
                else:
                    self.log.skipped[f.kind] += 1
            return fill, stack.disk.free
        raise ValueError(f"unknown fault kind {f.kind!r}")

    def watch(self) -> None:
        """Record and restart any role that exited without being killed; a progress line
        on stderr every ``every_s``."""
        now = time.monotonic()
        if now >= self._next_progress:
            self._next_progress = now + self.every_s
            print(f"soak {now - self.t0:6.0f} s: {sum(self.log.done.values())} faults done, "
                  f"{len(self.log.crashes)} unexpected exits{self.progress()}",
                  file=sys.stderr, flush=True)
        for name, proc in self.stack.procs.items():
            if name in self.down or not proc.starts or proc.running:
                continue
            rc = proc.proc.returncode if proc.proc else None
            self.log.crashes.append(f"{time.monotonic() - self.t0:.1f}s {name} exited on its "
                                    f"own (rc {rc}):\n{proc.tail(1500)}")
            proc.start()

    def play(self, alive: Callable[[], bool]) -> None:
        """Run every action at its time; stops early when ``alive()`` turns False."""
        for at, _, action in self._actions:
            while (wait := self.t0 + at - time.monotonic()) > 0:
                if not alive():
                    return
                self.watch()
                time.sleep(min(0.25, wait))
            action()

    def idle_until(self, cond: Callable[[], bool], poll: float = 0.5) -> None:
        while not cond():
            self.watch()
            time.sleep(poll)

    def heal(self) -> None:
        for proxy in self.stack.proxies:
            proxy.up()
            proxy.delay_s = 0.0
        self.stack.disk.free()
        for role in list(self.down):
            self.stack.procs[role].start()
        self.down.clear()
