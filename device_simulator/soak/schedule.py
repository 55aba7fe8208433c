"""The soak's fault schedule: which fault hits what, when, for how long, from one seed.

Strategy: pure and replayable. ``make_schedule`` turns (seed, counts, window) into a
sorted list of ``Fault`` s; the same inputs always give the same list, and the list
round-trips through JSON (``dump``/``load``) so a failed run can be replayed exactly
(``--replay schedule.json``) or regenerated from its seed. Each kind's faults are spread
over the window one per equal slot, with a duration shorter than the slot, so two
faults of one kind never overlap (a kill never hits a process that is still down),
while faults of different kinds overlap freely: that combination is the point.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

#: kind -> (min, max) seconds the fault lasts (a kill: how long the process stays down)
DURATIONS: dict[str, tuple[float, float]] = {
    "agent_kill": (0.2, 2.0),
    "broker_kill": (0.2, 2.0),
    "mosquitto_restart": (0.2, 1.5),
    "uplink_cut": (1.0, 6.0),
    "slow_link": (2.0, 8.0),
    "consumer_kill": (0.2, 3.0),
    "mirror_kill": (0.2, 3.0),
    "disk_full": (3.0, 10.0),
    "nats_kill": (0.5, 5.0),  # cluster mode: one NATS node at a time
}
KINDS = tuple(DURATIONS)
#: the delay per chunk of a slow link, seconds (uniform in this range)
SLOW_DELAY_S = (0.02, 0.3)


@dataclass(frozen=True, slots=True)
class Fault:
    at: float  # seconds after the start of publishing
    kind: str
    duration: float
    target: int = 0  # which consumer member
    level: float = 0.0  # slow_link: delay per chunk (s)

    def describe(self) -> str:
        extra = f" member {self.target}" if self.kind == "consumer_kill" else ""
        extra += f" delay {self.level * 1000:.0f} ms" if self.kind == "slow_link" else ""
        return f"{self.at:8.2f}s {self.kind:<18} for {self.duration:5.2f}s{extra}"


def make_schedule(seed: int, counts: dict[str, int], start: float, end: float,
                  members: int = 2) -> list[Fault]:
    """``counts[kind]`` faults of each kind inside [start, end), sorted by time."""
    unknown = set(counts) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)} (known: {', '.join(KINDS)})")
    rng = random.Random(seed)
    out: list[Fault] = []
    for kind in KINDS:  # fixed order: the draw sequence depends only on the inputs
        n = counts.get(kind, 0)
        if n <= 0:
            continue
        slot = (end - start) / n
        lo, hi = DURATIONS[kind]
        hi = min(hi, 0.8 * slot)
        lo = min(lo, hi)
        for i in range(n):
            duration = rng.uniform(lo, hi)
            at = start + i * slot + rng.uniform(0.0, max(0.0, slot - duration) * 0.9)
            # not rounded: a rounded start could fall before the window or the slot
            out.append(Fault(at, kind, duration,
                             target=rng.randrange(members),
                             level=round(rng.uniform(*SLOW_DELAY_S), 3)
                             if kind == "slow_link" else 0.0))
    out.sort(key=lambda f: (f.at, f.kind))
    return out


def dump(faults: list[Fault], path: Path, meta: dict[str, object]) -> None:
    path.write_text(json.dumps({"meta": meta, "faults": [asdict(f) for f in faults]},
                               indent=1))


def load(path: Path) -> tuple[list[Fault], dict[str, object]]:
    doc = json.loads(path.read_text())
    return [Fault(**f) for f in doc["faults"]], dict(doc.get("meta") or {})


def parse_counts(spec: str) -> dict[str, int]:
    """``agent_kill=50,broker_kill=20`` -> counts (kinds checked)."""
    counts: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in DURATIONS:
            raise ValueError(f"fault count {item!r}: expected KIND=N with KIND one of "
                             f"{', '.join(KINDS)}")
        try:
            n = int(value)
        except ValueError as exc:
            raise ValueError(f"fault count {item!r}: {exc}") from exc
        if n < 0:
            raise ValueError(f"fault count {item!r}: must be >= 0")
        counts[name.strip()] = n
    return counts
