"""``device-sim``: run a simulated fleet against an MQTT broker, verify what reached the cloud.

    device-sim run --broker mqtt://127.0.0.1:1883 --devices 1000 --rate 2 --duration 60 \\
        --manifest run.json
    device-sim verify --from http://127.0.0.1:8080 --topic telemetry --manifest run.json

Exit codes: ``run`` 0 when every worker finished and every connection came up,
1 otherwise; ``verify`` 0 when nothing is missing, duplicated or out of order,
1 when something is (or the topic does not exist), 2 when the manifest cannot be read
or the URL is not http(s), 3 when the broker cannot be reached, 4 when it refuses the
token (401/403). Usage errors exit 2.  See docs/simulator.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from typing import Any

from rich.console import Console

from mqttproto import V5, V311

from .config import ConfigError, RunConfig
from .faults import Burst, FaultConfig, FaultSpecError, parse_faults
from .manifest import Manifest, ManifestError
from .payloads import FORMATS


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="simulate devices publishing over MQTT")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883",
                   help="mqtt://[user:pass@]host:port or mqtts://... (default %(default)s)")
    p.add_argument("--devices", type=int, default=10)
    p.add_argument("--rate", type=float, default=1.0, help="messages/s per device")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of publishing")
    p.add_argument("--qos", type=int, choices=(0, 1), default=1)
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="json")
    p.add_argument("--id-pattern", default="dev-{n:05d}", help="device id from {n}")
    p.add_argument("--id-start", type=int, default=1, help="first device number")
    p.add_argument("--seq-start", type=int, default=1, help="first sequence number")
    p.add_argument("--topic-prefix", default="devices",
                   help="topics are PREFIX/{id}/telemetry and PREFIX/{id}/alarm")
    p.add_argument("--alarm-ratio", type=float, default=0.0,
                   help="fraction of readings sent as alarms on PREFIX/{id}/alarm")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=0, help="worker processes (0 = automatic)")
    p.add_argument("--gateway", type=int, default=0, metavar="K",
                   help="K devices per MQTT connection (0 = one connection per device)")
    p.add_argument("--client-id-prefix", default="")
    p.add_argument("--username")
    p.add_argument("--password", help="or DEVICE_SIM_PASSWORD")
    p.add_argument("--ca", dest="ca_file", help="CA file for mqtts://")
    p.add_argument("--insecure", action="store_true", help="mqtts:// without verification")
    p.add_argument("--mqtt-version", choices=("3.1.1", "5"), default="3.1.1")
    p.add_argument("--keepalive", type=int, default=60)
    p.add_argument("--max-inflight", type=int, default=100,
                   help="unacknowledged QoS 1 messages per connection")
    p.add_argument("--offline-buffer", type=int, default=1000,
                   help="messages a connection buffers while offline or congested")
    p.add_argument("--drain-timeout", type=float, default=10.0,
                   help="seconds to wait for outstanding acks at the end")
    p.add_argument("--connect-concurrency", type=int, default=64,
                   help="connection attempts in flight per worker")
    p.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                   help="workers' event loop (auto: uvloop when installed)")
    f = p.add_argument_group("faults")
    f.add_argument("--faults", default="", metavar="SPEC",
                   help="e.g. disconnect=0.001,duplicate=0.01,malformed=0.001,"
                        "oversized=0.001,skew=250,burst=10x2/30,reconnect=0.2-2,reboot=0.001")
    f.add_argument("--fault-disconnect-rate", type=float,
                   help="fraction of messages after which the device drops its connection")
    f.add_argument("--duplicate-ratio", type=float)
    f.add_argument("--malformed-ratio", type=float)
    f.add_argument("--oversized-ratio", type=float)
    f.add_argument("--oversized-bytes", type=int)
    f.add_argument("--clock-skew-ms", type=int)
    f.add_argument("--reboot-ratio", type=float,
                   help="fraction of messages after which the device reboots: its sequence "
                        "restarts and its boot epoch goes up")
    f.add_argument("--burst", metavar="FACTORxSECONDS/EVERY", help="e.g. 10x2/30")
    o = p.add_argument_group("output")
    o.add_argument("--manifest", help="write the run manifest (JSON) here")
    o.add_argument("--quiet", action="store_true", help="no live display")
    o.add_argument("--json", action="store_true", help="print the summary as JSON")


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check what reached the cloud against a manifest")
    p.add_argument("--from", dest="source", required=True, metavar="URL",
                   help="cloud broker URL (http://host:port)")
    p.add_argument("--topic", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--token", default=os.environ.get("DEVICE_SIM_TOKEN"),
                   help="bearer token (or DEVICE_SIM_TOKEN)")
    p.add_argument("--kind", choices=("all", "telemetry", "alarm"), default="all",
                   help="which readings this topic should hold (default: all)")
    p.add_argument("--latency-header", default=None, metavar="NAME",
                   help="record header holding the reference time in ms "
                        "(default: the record timestamp)")
    p.add_argument("--settle", type=float, default=0.0, metavar="SECONDS",
                   help="keep re-reading up to this long while records are missing")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="print only the verdict")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="device-sim", description="Run a simulated fleet against an MQTT broker, verify "
        "what reached the cloud. Exit codes: docs/simulator.md.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_verify(sub)
    return parser


def fault_config(args: argparse.Namespace) -> FaultConfig:
    """``--faults`` first, then the individual flags override it."""
    cfg = parse_faults(args.faults)
    overrides: dict[str, Any] = {
        "disconnect_ratio": args.fault_disconnect_rate,
        "duplicate_ratio": args.duplicate_ratio,
        "malformed_ratio": args.malformed_ratio,
        "oversized_ratio": args.oversized_ratio,
        "oversized_bytes": args.oversized_bytes,
        "clock_skew_ms": args.clock_skew_ms,
        "reboot_ratio": args.reboot_ratio,
        "burst": Burst.parse(args.burst) if args.burst else None,
    }
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def run_config(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        broker=args.broker, devices=args.devices, rate=args.rate, duration=args.duration,
        qos=args.qos, fmt=args.fmt, id_pattern=args.id_pattern, id_start=args.id_start,
        seq_start=args.seq_start, topic_prefix=args.topic_prefix, alarm_ratio=args.alarm_ratio,
        seed=args.seed, workers=args.workers, gateway=args.gateway,
        client_id_prefix=args.client_id_prefix, username=args.username,
        password=args.password or os.environ.get("DEVICE_SIM_PASSWORD"),
        ca_file=args.ca_file, insecure=args.insecure,
        mqtt_version=V5 if args.mqtt_version == "5" else V311, keepalive=args.keepalive,
        max_inflight=args.max_inflight, offline_buffer=args.offline_buffer,
        drain_timeout=args.drain_timeout, connect_concurrency=args.connect_concurrency,
        loop=args.loop, faults=fault_config(args))


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from .progress import LiveProgress, summary_table
    from .runner import run

    cfg = run_config(args)
    with LiveProgress(console, cfg.devices, cfg.duration,
                      enabled=not (args.quiet or args.json)) as live:
        result = run(cfg, on_progress=live.update)
    if args.manifest:
        result.manifest.write(args.manifest)
    summary = {**result.summary, "ok": result.ok, "manifest": args.manifest}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        console.print(summary_table(summary))
        if args.manifest:
            console.print(f"manifest: {args.manifest}")
    return 0 if result.ok else 1


async def _verify(args: argparse.Namespace, manifest: Manifest) -> dict[str, Any]:
    from .verify import Analyzer
    from .verify_source import ReadState, open_source, read_all

    analyzer = Analyzer(manifest, kind=args.kind, latency_header=args.latency_header)
    source = open_source(args.source, args.topic, args.token)
    state = ReadState()
    deadline = time.monotonic() + args.settle
    try:
        while True:
            async for batch in read_all(source, state):
                analyzer.feed(batch)
            if analyzer.missing_count() == 0 or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    finally:
        await source.close()
    report = analyzer.report().to_dict()
    report.update(source=args.source, topic=args.topic, manifest=args.manifest,
                  skipped_offsets=[list(s) for s in state.skipped])
    return report


def cmd_verify(args: argparse.Namespace, console: Console) -> int:
    from .progress import report_table
    from .verify_source import SourceError

    try:
        manifest = Manifest.read(args.manifest)
        report = asyncio.run(_verify(args, manifest))
    except (ManifestError, SourceError) as exc:
        err = Console(stderr=True)  # errors on stderr, whatever the report's format
        err.print(f"verify: {exc}", style="red", markup=False, highlight=False)
        return exc.exit_code if isinstance(exc, SourceError) else 2
    if args.json:
        print(json.dumps(report, indent=1))
    elif args.quiet:
        console.print("PASS" if report["ok"] else "FAIL")
    else:
        console.print(report_table(report))
    return 0 if report["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(stderr=bool(getattr(args, "json", False)))
    try:
        if args.command == "run":
            return cmd_run(args, console)
        return cmd_verify(args, console)
    except (ConfigError, FaultSpecError) as exc:
        parser.error(str(exc))
    return 2  # pragma: no cover - parser.error exits


if __name__ == "__main__":
    sys.exit(main())
