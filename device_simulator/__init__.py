"""device_simulator: thousands of simulated MQTT devices, faults on purpose, and a verifier.

``device-sim run`` publishes sensor readings with per-device sequence numbers and
writes a manifest of what was sent; ``device-sim verify`` reads the cloud topic and
reports what is missing, duplicated or out of order.  See docs/simulator.md.

Modules, one job each: ``prng`` (counter-based random draws), ``sensors`` (sensor
models), ``payloads`` (JSON/CBOR bytes and corruptions), ``faults`` (what goes wrong
when), ``mqtt_pub`` (the asyncio MQTT adapter over the project's codec
``mqttproto``), ``device`` (one device's send step), ``worker`` (one process's schedule),
``runner`` (the processes), ``config``, ``manifest``, ``verify`` (pure analysis),
``verify_source`` (reading the cloud), ``progress`` (display), ``cli``.
``netfault`` is a TCP fault proxy used by other suites' tests.
"""
