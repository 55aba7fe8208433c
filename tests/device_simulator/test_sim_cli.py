"""The command line: options into a RunConfig, usage errors, worker plans, rendering."""

from __future__ import annotations

import pytest
from rich.console import Console

from device_simulator.cli import build_parser, main, run_config
from device_simulator.config import ConfigError, RunConfig
from device_simulator.faults import Burst
from device_simulator.progress import report_table, summary_table
from device_simulator.runner import plan_workers


def _args(*argv: str):
    return build_parser().parse_args(["run", *argv])


def test_individual_fault_flags_override_the_spec():
    cfg = run_config(_args("--faults", "duplicate=0.1,malformed=0.2,skew=50",
                           "--malformed-ratio", "0.05", "--burst", "4x1/10",
                           "--fault-disconnect-rate", "0.001"))
    f = cfg.faults
    assert (f.duplicate_ratio, f.malformed_ratio, f.clock_skew_ms) == (0.1, 0.05, 50)
    assert f.burst == Burst(4.0, 1.0, 10.0) and f.disconnect_ratio == 0.001


def test_defaults_and_mqtt_options():
    cfg = run_config(_args("--broker", "mqtts://u:p@h:8884", "--mqtt-version", "5",
                           "--format", "cbor", "--qos", "0"))
    assert (cfg.mqtt_version, cfg.fmt, cfg.qos) == (5, "cbor", 0)
    assert cfg.device_id(7) == "dev-00007"
    assert cfg.topic("dev-00007", "alarm") == "devices/dev-00007/alarm"


@pytest.mark.parametrize("argv", [
    ["--devices", "0"], ["--rate", "0"], ["--id-pattern", "fixed"], ["--id-pattern", "a/{n}"],
    ["--id-pattern", "{x}"], ["--faults", "bogus=1"], ["--burst", "2x5/1"],
    ["--broker", "http://x"], ["--alarm-ratio", "2"], ["--qos", "2"],
])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", *argv])
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_connections_are_grouped_for_gateways_and_split_contiguously_over_workers():
    plans = plan_workers(RunConfig(devices=1001, gateway=100, workers=3))
    groups = [g for p in plans for g in p.groups]
    assert [g[0] for g in groups][:2] == ["gw-00000", "gw-00001"]
    assert len(groups) == 11 and [len(p.groups) for p in plans] == [3, 4, 4]
    assert [i for g in groups for i in g[1]] == list(range(1, 1002))
    single = plan_workers(RunConfig(devices=5, workers=2, client_id_prefix="t-"))
    assert single[0].groups[0] == ("t-dev-00001", (1,))


def test_automatic_workers_use_every_cpu_only_for_large_fleets(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert RunConfig(devices=50).worker_count() == 1
    assert RunConfig(devices=10_000).worker_count() == 2
    assert RunConfig(devices=10_000, gateway=100).worker_count() == 1
    assert RunConfig(devices=3, workers=8).worker_count() == 3
    with pytest.raises(ConfigError):
        RunConfig(workers=-1)


def _render(renderable) -> str:
    console = Console(record=True, width=140)
    console.print(renderable)
    return console.export_text()


def test_summary_and_report_render_the_key_figures():
    summary = {"devices": 10, "connections": 10, "connected_at_start": 10, "workers": 1,
               "connect_seconds": 0.1, "publish_seconds": 2.0, "readings": 200, "sent": 201,
               "readings_per_s": 100.0, "target_rate": 100.0, "acked": 200, "deferred": 0,
               "behind": 0, "cpu_us_per_reading": 12.5, "dropped": 0, "reconnects": 1,
               "connection_errors": 0,
               "worker_errors": ["boom"], "connect_errors": []}
    text = _render(summary_table(summary))
    assert "100 / 100 msg/s" in text and "boom" in text and "12.5 us" in text
    report = {"ok": False, "records": 5, "devices": 2, "devices_with_problems": 1,
              "totals": {"missing": 3, "duplicates": 1}, "sent_on_purpose": {"malformed": 2},
              "latency_ms": {"p50": 3.0, "p90": 4.0, "p99": 5.0, "max": 6.0},
              "latency_source": "record timestamp",
              "per_device": {"d1": {"ok": False, "missing": 3, "duplicates": 1,
                                    "out_of_order": 0, "partitions": [2],
                                    "missing_ranges": [[4, 6]]},
                             "d2": {"ok": True}}}
    text = _render(report_table(report))
    assert "FAIL" in text and "4-6" in text and "3 / 4 / 5 / 6 ms" in text
