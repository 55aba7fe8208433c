"""The ``reboot`` fault: devices restart their sequence with a new boot epoch, the edge
agent accepts the restart (and still drops redeliveries), and the verifier checks loss,
duplicates and order per (device, boot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from device_simulator import faults, payloads
from device_simulator.faults import FaultConfig, parse_faults
from device_simulator.manifest import DeviceRecord, Manifest
from device_simulator.verify import Observed, analyze
from tests.edge_agent.edge_agent_testing import (
    agent_server,
    http_get,
    read_stream,
    stream_status,
    write_config,
)
from tests.helpers import Server, wait_for

T0 = 1_700_000_000_000


def test_reboot_is_a_fault_spec_key_and_fires_at_its_ratio() -> None:
    cfg = parse_faults("reboot=0.01,duplicate=0.02")
    assert cfg.reboot_ratio == 0.01 and cfg.per_message
    n = 100_000
    hits = sum(bool(faults.decide(cfg, 0.0, 5, i % 50, i // 50) & faults.REBOOT)
               for i in range(n))
    assert abs(hits - n * 0.01) < 5 * (n * 0.01 * 0.99) ** 0.5
    assert not faults.decide(FaultConfig(), 0.0, 5, 1, 1) & faults.REBOOT


def _rebooted(last: int = 20, boot_starts: tuple[int, ...] = (11,)) -> Manifest:
    rec = DeviceRecord("dev-1", 1, "env")
    for n in range(1, last + 1):
        rec.note_seq(n)
        rec.sent += 1
    rec.boot_starts = list(boot_starts)
    m = Manifest(run={}, devices={"dev-1": rec})
    m.compute_totals()
    return m


def _obs(seq: int, boot: int = 0, offset: int = 0) -> Observed:
    message = payloads.telemetry("dev-1", seq, T0 + offset, "env", {"temperature": 1.0})
    if boot:
        message["boot"] = boot
    return Observed(0, offset, T0 + offset, b"dev-1", payloads.encode(message, "json"))


def test_verify_maps_each_boot_back_to_reading_numbers() -> None:
    manifest = _rebooted()  # readings 1..10 in boot 0 (seq 1..10), 11..20 in boot 1 (1..10)
    clean = [_obs(s) for s in range(1, 11)] + [_obs(s, 1) for s in range(1, 11)]
    report = analyze(manifest, clean)
    assert report.ok and report.total("delivered") == 20
    assert report.to_dict()["sent_on_purpose"]["reboots"] == 1

    lost = [o for o in clean if o is not clean[12]]  # boot 1, seq 3 = reading 13
    assert analyze(manifest, lost).devices["dev-1"].missing == [13]
    dup = [*clean, _obs(4, 1)]
    assert analyze(manifest, dup).devices["dev-1"].duplicates == 1
    swapped = [*clean[:10], clean[11], clean[10], *clean[12:]]
    assert analyze(manifest, swapped).devices["dev-1"].out_of_order == 1
    # (boot, seq) pairs that no boot can have sent: unexpected, never a match
    for bad in (_obs(11, 1), _obs(1, 2), _obs(11, 0)):
        r = analyze(manifest, [*clean, bad])
        assert r.devices["dev-1"].unexpected == 1 and r.ok


def test_a_manifest_without_boots_still_verifies_boot_free_payloads() -> None:
    manifest = _rebooted(boot_starts=())
    data = json.loads(json.dumps(manifest.to_dict()))
    for rec in data["devices"].values():
        del rec["boot_starts"]  # as written before the field existed
    old = Manifest.from_dict(data)
    assert analyze(old, [_obs(s) for s in range(1, 21)]).ok


def _sim(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "device_simulator.cli", "run", *args,
                           "--json", "--quiet"], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0 and proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def test_rebooting_devices_through_the_agent_verify_clean(tmp_path: Path,
                                                          mosquitto: Server) -> None:
    """Before: a device restarting at seq 1 had every reading dropped as a duplicate until
    its sequence passed the old mark. Now each boot is accepted and counted, redeliveries
    (the duplicate fault) are still dropped, and the verifier finds nothing missing."""
    cfg, status_port = write_config(tmp_path, mosquitto.port)
    agent = agent_server(cfg, status_port, tmp_path / "agent.out").start()
    manifest_path = tmp_path / "run.json"
    try:
        _sim("--broker", f"mqtt://127.0.0.1:{mosquitto.port}", "--devices", "20",
             "--rate", "20", "--duration", "3", "--qos", "1", "--seed", "11",
             "--faults", "reboot=0.04,duplicate=0.03", "--manifest", str(manifest_path),
             "--workers", "1")
        manifest = Manifest.read(manifest_path)
        assert manifest.totals["reboots"] > 5 and manifest.totals["duplicates"] > 5

        def report() -> object:
            records = [Observed(0, r.offset, r.timestamp, r.key, r.value, r.headers)
                       for r in read_stream(tmp_path / "data")]
            return analyze(manifest, records)

        wait_for(lambda: report().ok, 30, interval=0.2,  # type: ignore[attr-defined]
                 message="every reading of every boot stored once, in order")
        s = stream_status(status_port)
        # a reboot after a device's last reading sent nothing the agent could see
        seen_reboots = sum(1 for rec in manifest.devices.values() for start in rec.boot_starts
                           if rec.last_seq is not None and start <= rec.last_seq)
        assert s["sequence_resets"] == {"epoch": seen_reboots}
        assert s["deduplicated"] >= manifest.totals["duplicates"]
        metrics = http_get(status_port, "/metrics").text
        assert (f'edge_sequence_resets_total{{cause="epoch",stream="telemetry"}} '
                f'{float(seen_reboots)}') in metrics
        assert 'edge_dedup_evictions_total{stream="telemetry"} 0.0' in metrics
    finally:
        agent.stop()
