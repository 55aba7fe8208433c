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
from .schedule import Fault, dump, load
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
    cluster: bool = False


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
    stack = Stack(o.work, o.disk_mb, o.cluster)
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
        sampler = Sampler(o.work / "samples.jsonl", stack.procs.pids, stack.ports.status, t0,
                          segments=None if o.cluster else o.work / "cloud" / "topics",
                          metrics_urls=[f"http://127.0.0.1:{port}/metrics" for port, _ in
                                        stack.brokers.values()] if o.cluster else None)
        sampler.start()
        with open(o.work / "sim.json", "wb") as out, open(o.work / "sim.log", "wb") as err:
            sim = subprocess.Popen(_sim_args(o, stack.ports.mqtt, manifest_path), stdout=out,
                                   stderr=err, env=child_env(), start_new_session=True)
        def progress() -> str:
            agent = sampler.last_agent if sampler is not None else None
            backlog = sum(s["backlog"] for s in agent.values()) if agent else "?"
            return f", edge backlog {backlog}"

        runner = FaultRunner(stack, o.faults, t0, progress)
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
        judge(o.work, o.warmup_s, list(stack.procs), stack.disk.data_dir / "dead-letter",
              result)
    except KeyboardInterrupt:
        result["problems"].append("interrupted")
    except (RuntimeError, TimeoutError, verdict.SoakVerdictError) as exc:
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


def judge(work: Path, warmup_s: float, roles: list[str], dead_letter_dir: Path | None,
          result: dict[str, Any]) -> None:
    """Fill ``result`` with the verdict and the figures, from the files of a finished run
    in ``work``; problems go to result["problems"]. ``dead_letter_dir`` None: the drops
    are not reconciled again (result["reconcile"] is kept)."""
    problems: list[str] = result["problems"]
    manifest = Manifest.read(work / "run.json")
    result["sent"] = manifest.totals
    try:
        sim = json.loads((work / "sim.json").read_text())
        result["sim"] = {k: sim.get(k) for k in (
            "readings", "acked", "dropped", "behind", "target_rate", "readings_per_s",
            "reconnects", "publish_seconds")}
    except (OSError, ValueError):
        result["sim"] = None
    members = verdict.MemberIndex().read(work / f"member-{i}.out" for i in range(MEMBERS))
    result["member_repeats"] = members.repeats
    result["latency_ms"] = verdict.latency_figures(members.latency)
    views: dict[str, Any] = {"group": {}, "mirror": {}}
    for topic in TOPICS:
        db = work / f"archive-{topic}.db"
        views["group"][topic] = verdict.analyze(
            manifest, topic, lambda gaps, t=topic: members.records(t, gaps))
        views["mirror"][topic] = verdict.analyze(
            manifest, topic, lambda gaps, db=db: verdict.mirror_records(db, gaps))
    result["views"] = views
    for view, by_topic in views.items():
        for topic, rep in by_topic.items():
            t = rep["totals"]
            bad = {k: t[k] for k in ("missing", "duplicates", "out_of_order", "split",
                                     "unexpected") if t[k]}
            if bad or rep["offset_gaps"]:
                problems.append(f"{view}/{topic}: {bad} offset gaps {rep['offset_gaps']}")
    if dead_letter_dir is not None:
        letters = verdict.dead_letters(dead_letter_dir)
        result["reconcile"] = verdict.reconcile(manifest, letters, members.keys())
    if not result.get("reconcile", {}).get("ok", True):
        problems.append(f"drops do not reconcile: {result['reconcile']}")
    samples = figures.load(work / "samples.jsonl")
    result["resources"], grown = figures.judge(samples, warmup_s, roles)
    problems += grown
    faults, _ = load(work / "schedule.json")
    cuts = [(f.at, f.at + f.duration) for f in faults if f.kind == "uplink_cut"]
    lag = result["alarm_lag"] = figures.alarm_lag(samples, cuts)
    lag["bound_s"] = ALARM_LAG_BOUND_S
    # judged net of the uplink cuts and, in cluster mode, of the alarm partitions' leader
    # elections (figures.alarm_lag)
    judged, at = lag.get("net_max_s", lag["max_s"]), lag.get("net_at_s", lag["at_s"])
    if judged > ALARM_LAG_BOUND_S:
        net = " net of uplink cuts and leader elections" if "net_max_s" in lag else ""
        problems.append(f"alarms {judged:.1f} s behind telemetry{net} at {at} s "
                        f"(bound {ALARM_LAG_BOUND_S} s)")
    result["edge_peaks"] = figures.peaks(samples)


def rejudge(work: Path) -> dict[str, Any]:
    """The verdict of a finished run's files again (``--judge DIR``): after a change to
    the verdict, or when the harness itself could not finish judging. The edge's tmpfs
    is gone by then: the dead letters are reconciled again only where they are still on
    disk (no tmpfs), else the run's own reconciliation is kept."""
    _, meta = load(work / "schedule.json")
    try:
        result = json.loads((work / "result.json").read_text())
    except (OSError, ValueError):
        result = {"options": meta}
    result["problems"] = [p for p in result.get("problems", [])
                          if not p.startswith(("group/", "mirror/", "drops ", "alarms "))
                          and " grew " not in p]
    samples = figures.load(work / "samples.jsonl")
    roles = sorted({r for s in samples for r in s["procs"]})
    letters = work / "edge-disk" / "edge" / "dead-letter"
    judge(work, float(meta["warmup_s"]), roles, letters if letters.exists() else None, result)
    result["ok"] = not result["problems"]
    (work / "result.json").write_text(json.dumps(result, indent=1, default=str))
    return result
