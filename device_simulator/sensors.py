"""Sensor models: pure, seeded, deterministic functions of (profile, time, step).

Strategy: a device's character (its base temperature, route, battery, how often
it vibrates) is drawn once from the run seed and its index into a frozen
``Profile``; every reading is then a pure function of that profile, the
device's virtual time ``t`` (seconds since it started: ``seq / rate``) and the
reading's noise word (``noise_word(profile, step)``: 64 random bits keyed by
the device seed and the step, see the bit table below).  Nothing depends on wall-clock time or call
order, so a run is reproducible whatever the worker layout, and tests can check
any instant without simulating the ones before it.

Three device kinds, mixed 60/20/20 over the fleet:

- ``env``: temperature (daily cycle + slow calibration drift + noise),
  relative humidity (anti-correlated with the daily cycle), battery;
- ``tracker``: a GPS track around a loop (position, speed, heading, fix
  jitter), battery;
- ``vibration``: RMS/peak acceleration with quiet baselines and decaying bursts
  in random 30 s windows, housing temperature, battery.

Every value is clamped to the range of a real sensor (see the ``*_RANGE``
constants), so drift and bursts can never report the impossible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .prng import NORMAL, hash64, uniform, uniform_pair, word

KINDS = ("env", "tracker", "vibration")

TEMPERATURE_RANGE = (-40.0, 85.0)  # degC, a typical industrial sensor
HUMIDITY_RANGE = (0.0, 100.0)  # %RH
VIBRATION_RANGE = (0.0, 16.0)  # g, a +-16 g accelerometer
BATTERY_RANGE = (0.0, 100.0)  # %
VOLTAGE_RANGE = (3.0, 4.2)  # V, one Li-ion cell

DAY_S = 86400.0
BURST_WINDOW_S = 30.0
_BURST_TAU_S = 5.0
_M_PER_DEG = 111_320.0
_TWO_PI = 2.0 * math.pi

# Each reading draws its noise from one 64-bit word (prng.word(seed, step)); the
# models take disjoint bit fields so no two values of a reading share a draw:
#   bits  0-11 temperature          bits 12-23 humidity | speed | vibration RMS
#   bits 24-35 battery voltage      bits 36-47 GPS north | (36-51) crest factor
#   bits 48-59 GPS east
_BITS_TEMP, _BITS_SECOND, _BITS_THIRD, _BITS_FOURTH, _BITS_FIFTH = 0, 12, 24, 36, 48
_BURST_SALT = 0xB0B5_7A1E_5EED_0001


@dataclass(frozen=True, slots=True)
class Profile:
    """The fixed character of one device, drawn from the run seed and its index."""

    kind: str
    seed: int  # the device's own seed: keys all of its noise
    temp_base: float  # degC
    temp_daily_amp: float  # degC, half the day/night swing
    temp_drift_per_day: float  # degC/day calibration drift
    day_phase: float  # [0, 1): where in the day the device starts
    hum_base: float  # %RH
    lat0: float
    lon0: float
    radius_m: float  # the tracker's loop
    speed_mps: float
    vib_base: float  # g RMS when quiet
    burst_prob: float  # probability that a 30 s window holds a burst
    battery_start: float  # %
    battery_decay_per_day: float  # %/day


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return lo if value < lo else hi if value > hi else value


def profile_for(run_seed: int, index: int) -> Profile:
    """The profile of device ``index`` in a run seeded with ``run_seed``."""
    seed = hash64(run_seed, index)

    def u(channel: int) -> float:
        return uniform(seed, 1000 + channel)

    pick = u(0)
    kind = "env" if pick < 0.6 else "tracker" if pick < 0.8 else "vibration"
    return Profile(
        kind=kind,
        seed=seed,
        temp_base=10.0 + 20.0 * u(1),
        temp_daily_amp=2.0 + 6.0 * u(2),
        temp_drift_per_day=(u(3) - 0.5) * 1.0,
        day_phase=u(4),
        hum_base=30.0 + 40.0 * u(5),
        lat0=-60.0 + 120.0 * u(6),
        lon0=-180.0 + 360.0 * u(7),
        radius_m=500.0 + 4500.0 * u(8),
        speed_mps=1.0 + 19.0 * u(9),
        vib_base=0.02 + 0.08 * u(10),
        burst_prob=0.02 + 0.13 * u(11),
        battery_start=60.0 + 40.0 * u(12),
        battery_decay_per_day=0.5 + 4.5 * u(13),
    )


def noise_word(p: Profile, step: int) -> int:
    """The 64-bit noise word of reading ``step``: every model takes its draws from it."""
    return word(p.seed, step)


def _n(noise: int, shift: int) -> float:
    return NORMAL[(noise >> shift) & 0xFFF]


def _daily(p: Profile, t: float) -> float:
    """The daily cycle in [-1, 1]: warmest mid-afternoon."""
    return math.sin(_TWO_PI * (t / DAY_S + p.day_phase))


def temperature(p: Profile, t: float, noise: int) -> float:
    """degC: base + daily cycle + linear drift + 0.1 degC noise, clamped."""
    value = (
        p.temp_base
        + p.temp_daily_amp * _daily(p, t)
        + p.temp_drift_per_day * (t / DAY_S)
        + 0.1 * _n(noise, _BITS_TEMP)
    )
    return _clamp(value, TEMPERATURE_RANGE)


def humidity(p: Profile, t: float, noise: int) -> float:
    """%RH: falls as the day warms (relative humidity), 0.5 %RH noise, clamped."""
    value = p.hum_base - 2.5 * p.temp_daily_amp * _daily(p, t) + 0.5 * _n(noise, _BITS_SECOND)
    return _clamp(value, HUMIDITY_RANGE)


def gps(p: Profile, t: float, noise: int) -> tuple[float, float, float, float]:
    """(lat, lon, speed m/s, heading deg) on a loop around (lat0, lon0), ~3 m fix jitter."""
    theta = p.speed_mps * t / p.radius_m
    north = p.radius_m * math.cos(theta) + 3.0 * _n(noise, _BITS_FOURTH)
    east = p.radius_m * math.sin(theta) + 3.0 * _n(noise, _BITS_FIFTH)
    lat = _clamp(p.lat0 + north / _M_PER_DEG, (-90.0, 90.0))
    lon = p.lon0 + east / (_M_PER_DEG * math.cos(math.radians(p.lat0)))
    lon = (lon + 180.0) % 360.0 - 180.0
    # Moving counter-clockwise on the loop: the heading is the tangent.
    heading = math.degrees(theta + math.pi / 2.0) % 360.0
    speed = max(0.0, p.speed_mps + 0.2 * _n(noise, _BITS_SECOND))
    return lat, lon, speed, heading


def vibration(p: Profile, t: float, noise: int) -> tuple[float, float]:
    """(RMS g, peak g): a quiet baseline with exponentially decaying bursts."""
    window = int(t // BURST_WINDOW_S)
    burst = 0.0
    u_burst, u_amp = uniform_pair(word(p.seed ^ _BURST_SALT, window))
    if u_burst < p.burst_prob:
        amplitude = 0.5 + 4.5 * u_amp
        burst = amplitude * math.exp(-(t - window * BURST_WINDOW_S) / _BURST_TAU_S)
    rms = _clamp(p.vib_base + burst + 0.005 * _n(noise, _BITS_SECOND), VIBRATION_RANGE)
    crest = 1.4 + 1.6 * ((noise >> _BITS_FOURTH) & 0xFFFF) / 65536.0
    return rms, _clamp(rms * crest, VIBRATION_RANGE)


def battery(p: Profile, t: float, noise: int) -> tuple[float, float]:
    """(percent, volts): linear discharge from the start level; the cell voltage follows."""
    percent = _clamp(p.battery_start - p.battery_decay_per_day * (t / DAY_S), BATTERY_RANGE)
    volts = 3.0 + 1.2 * percent / 100.0 + 0.01 * _n(noise, _BITS_THIRD)
    return percent, _clamp(volts, VOLTAGE_RANGE)


def reading(p: Profile, t: float, step: int) -> dict[str, float]:
    """The fields one device reports at virtual time ``t``, rounded as a device would."""
    noise = word(p.seed, step)
    pct, volts = battery(p, t, noise)
    if p.kind == "env":
        return {
            "temperature": round(temperature(p, t, noise), 2),
            "humidity": round(humidity(p, t, noise), 1),
            "battery": round(pct, 1),
            "voltage": round(volts, 3),
        }
    if p.kind == "tracker":
        lat, lon, speed, heading = gps(p, t, noise)
        return {
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "speed": round(speed, 2),
            "heading": round(heading, 1),
            "battery": round(pct, 1),
            "voltage": round(volts, 3),
        }
    rms, peak = vibration(p, t, noise)
    return {
        "vib_rms": round(rms, 3),
        "vib_peak": round(peak, 3),
        "temperature": round(temperature(p, t, noise), 2),
        "battery": round(pct, 1),
        "voltage": round(volts, 3),
    }


def alarm_for(p: Profile, values: dict[str, float]) -> str:
    """The alarm a device of this kind raises (the simulator decides *when*)."""
    if p.kind == "tracker":
        return "geofence_exit"
    if p.kind == "vibration":
        return "vibration_high"
    return "temperature_high" if values.get("temperature", 0.0) > p.temp_base else "humidity_low"
