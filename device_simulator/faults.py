"""Fault injection: what goes wrong with which message, as pure functions.

Strategy: every decision is a function of (run seed, device index, seq), keyed
through ``prng.hash64``, so a fault plan is reproducible, independent of the
worker layout and testable for its ratios without running anything.  The
runner asks ``decide`` once per message and gets a bit set back; the manifest
records what was actually done so the verifier never has to re-derive it.

Faults (all ratios are per message, in [0, 1]):

- ``disconnect``: after sending the message the device drops its TCP
  connection without DISCONNECT (a network loss) and reconnects after a random
  delay in ``reconnect``; readings taken while offline are buffered;
- ``duplicate``: the message is sent twice with the same seq (a device retry
  after a lost ack); the pipeline must deliver it once (G5);
- ``malformed``: the payload is corrupt (undecodable), its seq is consumed;
- ``oversized``: a valid payload padded to ``oversized_bytes``;
- ``skew``: each device's clock is off by a fixed amount in +-skew ms;
- ``burst``: every ``every_s`` seconds all devices send ``factor`` times
  faster for ``duration_s`` seconds (at the end of each period);
- ``reboot``: after sending the message the device reboots without a persistent
  counter: its payload sequence starts again at ``seq_start`` and its boot epoch
  (the ``boot`` payload field) goes up by one.

A spec string for ``--faults`` lists ``name=value`` pairs, for example
``disconnect=0.0005,duplicate=0.01,malformed=0.001,oversized=0.001,skew=250,burst=10x2/30,reboot=0.001``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .prng import hash64, uniform, uniform_pair

DUPLICATE = 1
MALFORMED = 2
OVERSIZED = 4
DISCONNECT = 8
ALARM = 16
REBOOT = 32

_CH_MESSAGE = 0xFA17
_CH_SKEW = 0x5CE3
_CH_RECONNECT = 0x2EC0


class FaultSpecError(ValueError):
    """A ``--faults`` or ``--burst`` spec that does not parse."""


@dataclass(frozen=True, slots=True)
class Burst:
    """``factor`` times the normal rate for ``duration_s`` at the end of every ``every_s``."""

    factor: float
    duration_s: float
    every_s: float

    def __post_init__(self) -> None:
        if self.factor < 1 or self.duration_s <= 0 or self.every_s < self.duration_s:
            raise FaultSpecError("burst needs factor >= 1 and 0 < duration <= every")

    @classmethod
    def parse(cls, text: str) -> Burst:
        """``FACTORxDURATION/EVERY``, e.g. ``10x2/30``: 10x rate for 2 s every 30 s."""
        try:
            factor, rest = text.lower().split("x", 1)
            duration, every = rest.split("/", 1)
            return cls(float(factor), float(duration), float(every))
        except ValueError as exc:
            raise FaultSpecError(f"burst {text!r}: expected FACTORxDURATION/EVERY ({exc})") from exc

    def __str__(self) -> str:
        return f"{self.factor:g}x{self.duration_s:g}/{self.every_s:g}"

    def burst_time(self, t: float) -> float:
        """Seconds of [0, t] spent inside bursts."""
        if t <= 0:
            return 0.0
        periods, into = divmod(t, self.every_s)
        return periods * self.duration_s + max(0.0, into - (self.every_s - self.duration_s))


@dataclass(frozen=True, slots=True)
class FaultConfig:
    disconnect_ratio: float = 0.0
    duplicate_ratio: float = 0.0
    malformed_ratio: float = 0.0
    oversized_ratio: float = 0.0
    reboot_ratio: float = 0.0
    oversized_bytes: int = 300 * 1024
    clock_skew_ms: int = 0
    burst: Burst | None = None
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("disconnect_ratio", "duplicate_ratio", "malformed_ratio", "oversized_ratio",
                     "reboot_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise FaultSpecError(f"{name} must be in [0, 1]")
        if self.malformed_ratio + self.oversized_ratio > 1.0:
            raise FaultSpecError("malformed + oversized ratios must not exceed 1")
        if self.oversized_bytes < 1 or self.clock_skew_ms < 0:
            raise FaultSpecError("oversized_bytes must be > 0 and skew >= 0")
        if not 0 <= self.reconnect_min_s <= self.reconnect_max_s:
            raise FaultSpecError("reconnect needs 0 <= min <= max")

    @property
    def per_message(self) -> bool:
        """True when any per-message fault can fire (else ``decide`` may be skipped)."""
        return any((self.disconnect_ratio, self.duplicate_ratio, self.malformed_ratio,
                    self.oversized_ratio, self.reboot_ratio))

    def to_dict(self) -> dict[str, object]:
        d = dataclasses.asdict(self)
        d["burst"] = str(self.burst) if self.burst else None
        return d


_SPEC_FIELDS = {
    "disconnect": ("disconnect_ratio", float),
    "duplicate": ("duplicate_ratio", float),
    "malformed": ("malformed_ratio", float),
    "oversized": ("oversized_ratio", float),
    "reboot": ("reboot_ratio", float),
    "oversized_bytes": ("oversized_bytes", int),
    "skew": ("clock_skew_ms", int),
    "burst": ("burst", Burst.parse),
}


def parse_faults(spec: str, base: FaultConfig | None = None) -> FaultConfig:
    """Parse ``name=value,...`` (see the module docstring) over ``base``."""
    changes: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep:
            raise FaultSpecError(f"fault {item!r}: expected name=value")
        if name == "reconnect":
            lo, _, hi = value.partition("-")
            try:
                changes["reconnect_min_s"] = float(lo)
                changes["reconnect_max_s"] = float(hi or lo)
            except ValueError as exc:
                raise FaultSpecError(f"reconnect {value!r}: expected MIN-MAX seconds") from exc
            continue
        if name not in _SPEC_FIELDS:
            known = ", ".join([*_SPEC_FIELDS, "reconnect"])
            raise FaultSpecError(f"unknown fault {name!r} (known: {known})")
        field, conv = _SPEC_FIELDS[name]
        try:
            changes[field] = conv(value.strip())
        except ValueError as exc:
            raise FaultSpecError(f"fault {name}={value!r}: {exc}") from exc
    return dataclasses.replace(base or FaultConfig(), **changes)


def decide(cfg: FaultConfig, alarm_ratio: float, seed: int, device: int, seq: int) -> int:
    """The bit set (DUPLICATE | MALFORMED | OVERSIZED | DISCONNECT | ALARM | REBOOT) for one
    message (``seq`` is the device's reading number, which a reboot does not reset).

    Malformed and oversized exclude each other; a corrupt message is never also
    duplicated, which keeps the manifest's bookkeeping one-seq-one-fate.
    """
    u_payload, u_dup = uniform_pair(hash64(seed, _CH_MESSAGE, device, seq))
    u_disc, u_alarm = uniform_pair(hash64(seed, _CH_MESSAGE + 1, device, seq))
    flags = 0
    if u_payload < cfg.malformed_ratio:
        flags = MALFORMED
    elif u_payload < cfg.malformed_ratio + cfg.oversized_ratio:
        flags = OVERSIZED
    elif u_dup < cfg.duplicate_ratio:
        flags = DUPLICATE
    if u_disc < cfg.disconnect_ratio:
        flags |= DISCONNECT
    if u_alarm < alarm_ratio:
        flags |= ALARM
    if cfg.reboot_ratio and uniform(seed, _CH_MESSAGE + 2, device, seq) < cfg.reboot_ratio:
        flags |= REBOOT
    return flags


def clock_skew_ms(cfg: FaultConfig, seed: int, device: int) -> int:
    """The fixed offset of this device's clock, uniform in [-skew, +skew] ms."""
    if not cfg.clock_skew_ms:
        return 0
    return round((2.0 * uniform(seed, _CH_SKEW, device) - 1.0) * cfg.clock_skew_ms)


def reconnect_delay(cfg: FaultConfig, seed: int, device: int, attempt: int) -> float:
    """Seconds a device stays offline after its ``attempt``-th disconnect."""
    u = uniform(seed, _CH_RECONNECT, device, attempt)
    return cfg.reconnect_min_s + (cfg.reconnect_max_s - cfg.reconnect_min_s) * u


def scheduled_messages(t: float, rate: float, burst: Burst | None) -> float:
    """How many messages one device should have sent after ``t`` seconds at ``rate``/s."""
    if burst is None:
        return rate * t
    return rate * (t + (burst.factor - 1.0) * burst.burst_time(t))
