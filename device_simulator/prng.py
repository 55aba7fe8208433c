"""Counter-based random numbers: a pure function of (seed, keys...).

Strategy: the simulator must be reproducible no matter how the devices are
spread over worker processes or in which order the scheduler reaches them. A
stateful generator (``random.Random``) would make a device's values depend on
the call order; hashing the coordinates of a draw (seed, device, sequence
number, channel) with splitmix64 makes every draw independent and repeatable.
One 64-bit hash yields two 32-bit uniforms, which is enough resolution for the
smallest fault ratios (2**-32) and halves the cost on the per-message path.

Gaussian noise is the hot spot of the sensor models (several draws per
reading, 50,000 readings/s), so it is a table lookup: ``NORMAL`` holds the
4096 quantiles of N(0, 1) at (i + 0.5) / 4096, and 12 bits of a hash pick one,
which is an exact discretisation of the normal distribution (bounded at about
+-3.5 sigma).  One 64-bit word (``word``) yields five such draws.
"""

from __future__ import annotations

from statistics import NormalDist

_MASK = (1 << 64) - 1
_INV32 = 1.0 / 4294967296.0
_GOLDEN = 0x9E3779B97F4A7C15

NORMAL_BITS = 12
NORMAL: tuple[float, ...] = tuple(
    NormalDist().inv_cdf((i + 0.5) / (1 << NORMAL_BITS)) for i in range(1 << NORMAL_BITS))


def mix64(x: int) -> int:
    """splitmix64's finaliser: a bijective 64-bit mix with good avalanche."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def hash64(seed: int, *keys: int) -> int:
    """A 64-bit hash of the seed and integer keys (order matters)."""
    h = mix64(seed & _MASK)
    for k in keys:
        h = mix64(h ^ (k & _MASK))
    return h


def word(seed: int, step: int) -> int:
    """A 64-bit hash of (seed, step) in one mix: the per-reading noise word.

    ``seed`` must itself be a hash (a device seed from ``hash64``), so the
    multiplication by the golden ratio spreads consecutive steps apart.
    """
    return mix64(seed ^ ((step * _GOLDEN) & _MASK))


def uniform_pair(h: int) -> tuple[float, float]:
    """Two independent uniforms in [0, 1) from one 64-bit hash."""
    return (h & 0xFFFFFFFF) * _INV32, (h >> 32) * _INV32


def uniform(seed: int, *keys: int) -> float:
    """One uniform in [0, 1) for the given coordinates."""
    return (hash64(seed, *keys) & 0xFFFFFFFF) * _INV32


def normal(seed: int, *keys: int) -> float:
    """A standard normal draw (from ``NORMAL``) for the given coordinates."""
    return NORMAL[hash64(seed, *keys) & 0xFFF]


def string_seed(text: str) -> int:
    """A stable 64-bit seed from text (Python's hash() is salted per process)."""
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) & _MASK
    return mix64(h)
