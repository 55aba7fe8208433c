"""The soak harness: the whole pipeline for as long as you like under a seeded random
schedule of every fault at once, then a verdict and resource figures (docs/reliability.md).
Run it with ``python -m device_simulator.soak`` or ``make soak MINUTES=10``."""
