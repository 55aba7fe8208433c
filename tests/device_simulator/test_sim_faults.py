"""Fault injection: pure decisions whose ratios hold within statistical bounds."""

from __future__ import annotations

import math

import pytest

from device_simulator import faults
from device_simulator.faults import Burst, FaultConfig, FaultSpecError, parse_faults

N = 200_000


def _count(cfg: FaultConfig, alarm_ratio: float = 0.0) -> dict[int, int]:
    counts = dict.fromkeys((faults.DUPLICATE, faults.MALFORMED, faults.OVERSIZED,
                            faults.DISCONNECT, faults.ALARM), 0)
    for i in range(N):
        flags = faults.decide(cfg, alarm_ratio, 1234, i % 100, i // 100)
        for bit in counts:
            if flags & bit:
                counts[bit] += 1
    return counts


def _within(count: int, p: float, n: int = N) -> bool:
    """Inside 5 standard deviations of a binomial(n, p) (fixed seed: deterministic)."""
    sd = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= 5 * sd + 1


def test_each_fault_fires_at_its_ratio():
    cfg = FaultConfig(disconnect_ratio=0.002, duplicate_ratio=0.05, malformed_ratio=0.01,
                      oversized_ratio=0.003)
    c = _count(cfg, alarm_ratio=0.02)
    assert _within(c[faults.MALFORMED], 0.01)
    assert _within(c[faults.OVERSIZED], 0.003)
    # Duplicates are drawn only for messages that are not corrupt.
    assert _within(c[faults.DUPLICATE], 0.05 * (1 - 0.013))
    assert _within(c[faults.DISCONNECT], 0.002)
    assert _within(c[faults.ALARM], 0.02)


def test_no_faults_configured_means_no_faults():
    assert _count(FaultConfig()) == dict.fromkeys(
        (faults.DUPLICATE, faults.MALFORMED, faults.OVERSIZED, faults.DISCONNECT,
         faults.ALARM), 0)
    assert not FaultConfig().per_message


def test_decisions_are_pure_and_exclusive_between_corruptions():
    cfg = FaultConfig(duplicate_ratio=0.3, malformed_ratio=0.3, oversized_ratio=0.3)
    for seq in range(2000):
        flags = faults.decide(cfg, 0.0, 9, 4, seq)
        assert flags == faults.decide(cfg, 0.0, 9, 4, seq)
        corrupt = flags & (faults.MALFORMED | faults.OVERSIZED | faults.DUPLICATE)
        assert corrupt in (0, faults.MALFORMED, faults.OVERSIZED, faults.DUPLICATE)


def test_clock_skew_is_fixed_per_device_and_bounded():
    cfg = FaultConfig(clock_skew_ms=500)
    skews = [faults.clock_skew_ms(cfg, 1, d) for d in range(2000)]
    assert all(-500 <= s <= 500 for s in skews)
    assert skews == [faults.clock_skew_ms(cfg, 1, d) for d in range(2000)]
    assert min(skews) < -400 and max(skews) > 400
    assert faults.clock_skew_ms(FaultConfig(), 1, 5) == 0


def test_reconnect_delays_stay_in_their_window():
    cfg = FaultConfig(reconnect_min_s=0.5, reconnect_max_s=1.5)
    delays = [faults.reconnect_delay(cfg, 3, d, n) for d in range(50) for n in range(20)]
    assert all(0.5 <= x <= 1.5 for x in delays)


def test_bursts_multiply_the_rate_at_the_end_of_each_period():
    burst = Burst.parse("10x2/30")
    assert (burst.factor, burst.duration_s, burst.every_s) == (10.0, 2.0, 30.0)
    assert burst.burst_time(28.0) == 0.0
    assert burst.burst_time(29.0) == 1.0
    assert burst.burst_time(30.0) == 2.0
    assert burst.burst_time(90.0) == 6.0
    # 1 msg/s: 28 messages in the quiet part, then 10/s for 2 s.
    assert faults.scheduled_messages(30.0, 1.0, burst) == pytest.approx(48.0)
    assert faults.scheduled_messages(30.0, 1.0, None) == 30.0


def test_a_spec_string_sets_every_fault():
    cfg = parse_faults("disconnect=0.001, duplicate=0.01,malformed=0.002,oversized=0.003,"
                       "oversized_bytes=1000,skew=250,burst=5x1/10,reconnect=0.1-0.3")
    assert cfg == FaultConfig(disconnect_ratio=0.001, duplicate_ratio=0.01,
                              malformed_ratio=0.002, oversized_ratio=0.003,
                              oversized_bytes=1000, clock_skew_ms=250,
                              burst=Burst(5.0, 1.0, 10.0), reconnect_min_s=0.1,
                              reconnect_max_s=0.3)
    assert parse_faults("") == FaultConfig()
    assert cfg.to_dict()["burst"] == "5x1/10"


@pytest.mark.parametrize("spec", ["bogus=1", "duplicate", "duplicate=2", "burst=3",
                                  "burst=0.5x1/10", "malformed=0.6,oversized=0.6",
                                  "skew=-1", "reconnect=a-b"])
def test_bad_specs_are_refused_with_a_clear_error(spec):
    with pytest.raises(FaultSpecError):
        parse_faults(spec)
