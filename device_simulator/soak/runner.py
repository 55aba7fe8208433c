"""One soak run: build the pipeline, publish, play the faults, drain, judge, report.

Strategy: everything the run started is stopped in ``finally`` (Ctrl-C and SIGTERM
included); the verdict is computed only after every process has stopped, from files
(the manifest, the members' output, the mirror's SQLite files, the dead-letter log and
the samples), and written to ``result.json`` next to the schedule so a failure can be
studied and replayed (``--replay <work>/schedule.json``).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..manifest import Manifest
from . import figures, verdict
from .configs import TOPICS
from .faultrun import FaultRunner
from .procs import child_env, python
from .sampler import Sampler
from .schedule import Fault, dump
from .stack import MEMBERS, Stack, wait_until

#: how far the oldest alarm waiting at the edge may be behind the oldest waiting telemetry
ALARM_LAG_BOUND_S = 5.0
DRAIN_TIMEOUT_S = 600.0


@dataclass
class Options:
    seconds: float
    rate: float
    devices: int
    seed: int
    reboots: int
    malformed: int
    alarm_ratio: float
    warmup_s: float
    work: Path
    disk_mb: int = 256
    faults: list[Fault] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def _sim_args(o: Options, port: int, manifest: Path) -> list[str]:
    total = o.rate * o.seconds
    spec = [f"reboot={o.reboots / total:.8f}" if o.reboots else "",
            f"malformed={o.malformed / total:.8f}" if o.malformed else ""]
    return python("device_simulator.cli", "run", "--broker", f"mqtt://127.0.0.1:{port}",
                  "--devices", str(o.devices), "--rate", f"{o.rate / o.devices:g}",
                  "--duration", f"{o.seconds:g}", "--qos", "1", "--seed", str(o.seed),
                  "--alarm-ratio", f"{o.alarm_ratio:g}", "--mqtt-version", "5",
                  "--faults", ",".join(filter(None, spec)), "--manifest", str(manifest),
                  "--json", "--quiet")


def _sigterm(*_: object) -> None:
    raise KeyboardInterrupt


def run(o: Options) -> dict[str, Any]:
    shutil.rmtree(o.work, ignore_errors=True)
    o.work.mkdir(parents=True)
    dump(o.faults, o.work / "schedule.json", o.meta)
    signal.signal(signal.SIGTERM, _sigterm)
    stack = Stack(o.work, o.disk_mb)
    sampler = sim = None
    result: dict[str, Any] = {"options": {k: str(v) if isinstance(v, Path) else v
                                          for k, v in asdict(o).items() if k != "faults"},
                              "problems": []}
    try:
        stack.build()
        if not stack.disk.available:
            result["problems_skipped"] = [stack.disk.why]
            print(f"soak: {stack.disk.why}", flush=True)
        stack.start_all()
        manifest_path = o.work / "run.json"
        t0 = time.monotonic()
        sampler = Sampler(o.work / "samples.jsonl", stack.procs.pids, stack.ports.status, t0)
        sampler.start()
        with open(o.work / "sim.json", "wb") as out, open(o.work / "sim.log", "wb") as err:
            sim = subprocess.Popen(_sim_args(o, stack.ports.mqtt, manifest_path), stdout=out,
                                   stderr=err, env=child_env(), start_new_session=True)
        runner = FaultRunner(stack, o.faults, t0)
        runner.play(alive=lambda: sim.poll() is None)
        runner.heal()
        runner.idle_until(lambda: sim.poll() is not None)
        published_s = time.monotonic() - t0
        if sim.returncode != 0:
            result["problems"].append(f"device-sim exited {sim.returncode}: "
                                      + (o.work / "sim.log").read_text(errors="replace")[-1500:])
        drain_t = time.monotonic()
        for cond, what in ((stack.agent_drained, "the edge backlog to drain"),
                           (stack.group_caught_up, "the consumer group to commit the end"),
                           (stack.mirror_caught_up, "the mirror to reach the end")):
            try:
                wait_until(cond, DRAIN_TIMEOUT_S, what, runner.watch)
            except TimeoutError as exc:
                result["problems"].append(str(exc))
        result["drain_s"] = round(time.monotonic() - drain_t, 1)
        result["published_s"] = round(published_s, 1)
        result["faults"] = {"done": dict(runner.log.done), "skipped": dict(runner.log.skipped)}
        result["problems"] += runner.log.crashes
        sampler.stop()
        stack.procs.stop_all()
        judge(o, stack, result)
    except KeyboardInterrupt:
        result["problems"].append("interrupted")
    except (RuntimeError, TimeoutError) as exc:
        result["problems"].append(f"harness: {exc}")
    finally:
        if sampler is not None:
            sampler.stop()
        if sim is not None and sim.poll() is None:
            sim.kill()
            sim.wait(10)
        stack.teardown()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    result["ok"] = not result["problems"]
    (o.work / "result.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def judge(o: Options, stack: Stack, result: dict[str, Any]) -> None:
    """Fill ``result`` with the verdict and the figures; problems go to result["problems"]."""
    problems: list[str] = result["problems"]
    manifest = Manifest.read(o.work / "run.json")
    result["sent"] = manifest.totals
    try:
        sim = json.loads((o.work / "sim.json").read_text())
        result["sim"] = {k: sim.get(k) for k in (
            "readings", "acked", "dropped", "behind", "target_rate", "readings_per_s",
            "reconnects", "publish_seconds")}
    except (OSError, ValueError):
        result["sim"] = None
    records, latency, repeats = verdict.read_members(
        stack.member_out(i) for i in range(MEMBERS))
    result["member_repeats"] = repeats
    result["latency_ms"] = verdict.latency_figures(latency)
    views: dict[str, Any] = {"group": {}, "mirror": {}}
    for topic in TOPICS:
        views["group"][topic] = verdict.analyze(manifest, topic, records.get(topic, {}))
        views["mirror"][topic] = verdict.analyze(
            manifest, topic, verdict.read_mirror(o.work / f"archive-{topic}.db"))
    result["views"] = views
    for view, by_topic in views.items():
        for topic, rep in by_topic.items():
            t = rep["totals"]
            bad = {k: t[k] for k in ("missing", "duplicates", "out_of_order", "split",
                                     "unexpected") if t[k]}
            if bad or rep["offset_gaps"]:
                problems.append(f"{view}/{topic}: {bad} offset gaps {rep['offset_gaps']}")
    letters = verdict.dead_letters(stack.disk.data_dir / "dead-letter")
    result["reconcile"] = verdict.reconcile(manifest, letters, verdict.delivered_keys(records))
    if not result["reconcile"]["ok"]:
        problems.append(f"drops do not reconcile: {result['reconcile']}")
    samples = figures.load(o.work / "samples.jsonl")
    result["resources"], grown = figures.judge(samples, o.warmup_s, list(stack.procs))
    problems += grown
    result["alarm_lag"] = figures.alarm_lag(samples)
    result["alarm_lag"]["bound_s"] = ALARM_LAG_BOUND_S
    if result["alarm_lag"]["max_s"] > ALARM_LAG_BOUND_S:
        problems.append(f"alarms {result['alarm_lag']['max_s']:.1f} s behind telemetry at "
                        f"{result['alarm_lag']['at_s']} s (bound {ALARM_LAG_BOUND_S} s)")
    result["edge_peaks"] = figures.peaks(samples)
