"""Sensor models: deterministic for a seed, and always within physical ranges."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from device_simulator import sensors
from device_simulator.prng import NORMAL, hash64, normal, uniform, word

seeds = st.integers(min_value=0, max_value=2**64 - 1)
indices = st.integers(min_value=0, max_value=10**6)
times = st.floats(min_value=0.0, max_value=5 * 365 * 86400.0, allow_nan=False)
steps = st.integers(min_value=0, max_value=2**40)


def _in(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1] and math.isfinite(value)


@given(seeds, indices, times, steps)
def test_readings_are_a_pure_function_of_seed_index_time_and_step(seed, index, t, step):
    a = sensors.reading(sensors.profile_for(seed, index), t, step)
    b = sensors.reading(sensors.profile_for(seed, index), t, step)
    assert a == b


@given(seeds, indices, times, steps)
@settings(max_examples=300)
def test_every_value_is_within_the_physical_range_of_its_sensor(seed, index, t, step):
    p = sensors.profile_for(seed, index)
    noise = sensors.noise_word(p, step)
    assert _in(sensors.temperature(p, t, noise), sensors.TEMPERATURE_RANGE)
    assert _in(sensors.humidity(p, t, noise), sensors.HUMIDITY_RANGE)
    lat, lon, speed, heading = sensors.gps(p, t, noise)
    assert -90.0 <= lat <= 90.0 and -180.0 <= lon < 180.0
    assert speed >= 0.0 and 0.0 <= heading < 360.0
    rms, peak = sensors.vibration(p, t, noise)
    assert _in(rms, sensors.VIBRATION_RANGE) and _in(peak, sensors.VIBRATION_RANGE)
    assert peak >= rms or peak == sensors.VIBRATION_RANGE[1]
    pct, volts = sensors.battery(p, t, noise)
    assert _in(pct, sensors.BATTERY_RANGE) and _in(volts, sensors.VOLTAGE_RANGE)


@given(seeds, indices, times, steps)
def test_a_reading_has_the_fields_of_its_device_kind(seed, index, t, step):
    p = sensors.profile_for(seed, index)
    values = sensors.reading(p, t, step)
    assert p.kind in sensors.KINDS
    expected = {
        "env": {"temperature", "humidity", "battery", "voltage"},
        "tracker": {"lat", "lon", "speed", "heading", "battery", "voltage"},
        "vibration": {"vib_rms", "vib_peak", "temperature", "battery", "voltage"},
    }[p.kind]
    assert set(values) == expected
    assert all(isinstance(v, float) for v in values.values())


def test_different_seeds_give_different_fleets():
    a = [sensors.profile_for(1, i) for i in range(50)]
    b = [sensors.profile_for(2, i) for i in range(50)]
    assert a != b
    assert len({p.temp_base for p in a}) == 50


def test_the_fleet_mixes_kinds_roughly_60_20_20():
    kinds = [sensors.profile_for(7, i).kind for i in range(5000)]
    assert 0.55 < kinds.count("env") / 5000 < 0.65
    assert 0.16 < kinds.count("tracker") / 5000 < 0.24
    assert 0.16 < kinds.count("vibration") / 5000 < 0.24


def test_temperature_follows_a_daily_cycle_and_drifts_slowly():
    p = sensors.profile_for(3, 1)
    day = [sensors.temperature(p, h * 3600.0, 0) for h in range(24)]
    swing = max(day) - min(day)
    # The daily amplitude is 2..8 degC (a swing of twice that), plus small noise.
    assert 2 * p.temp_daily_amp - 0.8 < swing < 2 * p.temp_daily_amp + 0.8
    # Same time of day a week later: only drift and noise separate the two.
    week = 7 * 86400.0
    gap = sensors.temperature(p, week, 1) - sensors.temperature(p, 0.0, 1)
    assert abs(gap - 7 * p.temp_drift_per_day) < 0.8


def test_the_battery_only_discharges():
    p = sensors.profile_for(5, 9)
    levels = [sensors.battery(p, d * 86400.0, 0)[0] for d in range(0, 400, 10)]
    assert levels == sorted(levels, reverse=True)
    assert levels[0] == p.battery_start
    assert levels[-1] == 0.0  # 400 days at >= 0.5 %/day from <= 100 %


def test_vibration_bursts_happen_in_some_windows_and_decay():
    p = next(p for i in range(200) if (p := sensors.profile_for(11, i)).kind == "vibration")
    window = sensors.BURST_WINDOW_S
    starts = [sensors.vibration(p, w * window, 0)[0] for w in range(400)]
    bursts = [w for w, rms in enumerate(starts) if rms > p.vib_base + 0.3]
    assert 0 < len(bursts) < 400 * 0.3  # burst_prob is 2..15 %
    w = bursts[0]
    decay = [sensors.vibration(p, w * window + s, 0)[0] for s in (0.0, 5.0, 15.0, 29.0)]
    assert decay == sorted(decay, reverse=True)


def test_the_tracker_moves_along_its_loop_at_its_speed():
    p = next(p for i in range(200) if (p := sensors.profile_for(13, i)).kind == "tracker")
    a = sensors.gps(p, 0.0, 0)
    b = sensors.gps(p, 10.0, 0)
    metres = math.hypot((b[0] - a[0]) * 111_320.0,
                        (b[1] - a[1]) * 111_320.0 * math.cos(math.radians(p.lat0)))
    # 10 s at speed_mps along the arc (the chord is slightly shorter), +- fix jitter.
    assert abs(metres - 10 * p.speed_mps) < 0.05 * 10 * p.speed_mps + 25


def test_prng_draws_are_repeatable_and_uniform():
    assert hash64(1, 2, 3) == hash64(1, 2, 3) != hash64(1, 3, 2)
    us = [uniform(42, i) for i in range(20000)]
    assert all(0.0 <= u < 1.0 for u in us)
    assert abs(sum(us) / len(us) - 0.5) < 0.01
    ns = [normal(42, i) for i in range(20000)]
    mean = sum(ns) / len(ns)
    var = sum((x - mean) ** 2 for x in ns) / len(ns)
    assert abs(mean) < 0.03 and abs(var - 1.0) < 0.05
    assert len(NORMAL) == 4096 and tuple(sorted(NORMAL)) == NORMAL
    assert word(5, 1) != word(5, 2)
