"""device_simulator package."""
