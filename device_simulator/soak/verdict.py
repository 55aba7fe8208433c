"""The soak's verdict: what the consumer group and the mirror received, against the manifest.

Strategy: two independent downstream views, each judged by the simulator's own verifier
(``verify.Analyzer``, per (device, boot) and across boots): the group members' output
files (each (topic, partition, offset) counted once: a member killed before its commit
hands the same offsets out again, which is the consumer's at-least-once contract, not a
duplicate in the pipeline) and the SQLite tables the mirror wrote. Then the drops are
reconciled with the agent's dead-letter log: every malformed reading Mosquitto took is
there (counted), no dead-lettered reading was also delivered, and no reading the devices
counted as dropped arrived (``unexpected``).
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..manifest import Manifest
from ..verify import Analyzer, Observed, percentiles
from .configs import KIND_OF

Records = dict[str, dict[tuple[int, int], Observed]]  # topic -> (partition, offset) -> record


def _value(device: str, boot: str, seq: str, ts: str) -> bytes:
    if seq == "-":
        return b"\xff"  # undecodable downstream too
    doc: dict[str, Any] = {"device": device, "seq": int(seq), "ts": int(ts) if ts != "-" else 0}
    if boot not in ("-", "0"):
        doc["boot"] = int(boot) if boot.lstrip("-").isdigit() else boot
    return json.dumps(doc).encode()


def read_members(paths: Iterable[Path]) -> tuple[Records, dict[str, list[float]], int]:
    """Records by topic (first copy of each offset), end-to-end latencies (ms, device
    time to the member's receipt) by topic, and how many lines were repeats."""
    records: Records = defaultdict(dict)
    latency: dict[str, list[float]] = defaultdict(list)
    repeats = 0
    for path in paths:
        if not path.exists():
            continue
        with open(path) as f:
            for text in f:
                parts = text.split()
                if len(parts) != 9 or not text.endswith("\n"):
                    continue  # a line torn by a SIGKILL
                topic, p, o, ts, recv, device, boot, seq, dts = parts
                key = (int(p), int(o))
                if key in records[topic]:
                    repeats += 1
                    continue
                records[topic][key] = Observed(int(p), int(o), int(ts), device.encode(),
                                               _value(device, boot, seq, dts))
                if dts != "-":
                    latency[topic].append(float(int(recv) - int(dts)))
    return records, latency, repeats


def read_mirror(db: Path) -> dict[tuple[int, int], Observed]:
    out: dict[tuple[int, int], Observed] = {}
    if not db.exists():
        return out
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute('SELECT "partition", "offset", "timestamp", "key", "value" '
                           "FROM records")
        for p, o, ts, key, value in rows:
            k = key.encode() if isinstance(key, str) else bytes(key or b"")
            v = value.encode() if isinstance(value, str) else bytes(value or b"")
            out[(p, o)] = Observed(p, o, ts, k, v)
    except sqlite3.Error:
        return out
    finally:
        con.close()
    return out


def analyze(manifest: Manifest, topic: str,
            records: dict[tuple[int, int], Observed]) -> dict[str, Any]:
    """The verifier's report (totals, no per-device detail) plus the devices in trouble."""
    analyzer = Analyzer(manifest, kind=KIND_OF[topic])
    analyzer.feed(records[k] for k in sorted(records))
    report = analyzer.report()
    out = report.to_dict(per_device=False)
    out["problems"] = {name: d.to_dict() for name, d in sorted(report.devices.items())
                       if not d.ok or d.unexpected}
    out["problems"] = dict(list(out["problems"].items())[:20])
    out["offset_gaps"] = offset_gaps(records)
    return out


def offset_gaps(records: dict[tuple[int, int], Observed]) -> dict[int, int]:
    """Per partition, offsets below the highest seen that were never seen."""
    by_part: dict[int, list[int]] = defaultdict(list)
    for p, o in records:
        by_part[p].append(o)
    return {p: (max(os_) - min(os_) + 1) - len(os_) for p, os_ in by_part.items()
            if (max(os_) - min(os_) + 1) != len(os_)}


def latency_figures(latency: dict[str, list[float]]) -> dict[str, Any]:
    return {topic: percentiles(v) for topic, v in latency.items()}


def dead_letters(directory: Path) -> list[dict[str, Any]]:
    """The agent's dead-letter entries (read after the agent stopped)."""
    from shared_log import Log, LogError

    if not directory.exists():
        return []
    out: list[dict[str, Any]] = []
    try:
        log = Log(directory)
    except LogError:
        return out
    try:
        offset = log.start_offset
        while offset < log.end_offset:
            batch = log.read(offset, max_records=1000)
            if not batch:
                break
            for r in batch:
                h = {k: v.decode(errors="replace") for k, v in r.headers}
                out.append({"device": r.key.decode(errors="replace"), "payload": r.value,
                            "reason": h.get("reason"), "topic": h.get("topic")})
            offset = batch[-1].offset + 1
    finally:
        log.close()
    return out


def reconcile(manifest: Manifest, letters: list[dict[str, Any]],
              delivered: dict[str, set[tuple[str, int, int]]]) -> dict[str, Any]:
    """Every malformed reading Mosquitto acknowledged is dead-lettered (counted once per
    distinct payload; a redelivery after a kill may add a copy); nothing dead-lettered
    was delivered; nothing a device dropped arrived."""
    from ..payloads import BOOT_FIELD, SEQ_FIELD, decode

    distinct: dict[str, set[bytes]] = defaultdict(set)
    reasons: dict[str, int] = defaultdict(int)
    also_delivered = []
    for d in letters:
        reasons[d["reason"]] += 1
        if d["reason"] == "malformed":
            distinct[d["device"]].add(d["payload"])
        msg = decode(d["payload"])
        if msg is not None and isinstance(msg.get(SEQ_FIELD), int):
            key = (d["device"], msg.get(BOOT_FIELD, 0), msg[SEQ_FIELD])
            if any(key in seen for seen in delivered.values()):
                also_delivered.append(key)
    short, extra = [], []
    for name, rec in manifest.devices.items():
        sent = len(rec.malformed_seqs)
        acked = len(set(rec.malformed_seqs) - set(rec.unconfirmed_seqs))
        got = len(distinct.get(name, ()))
        if got < acked:
            short.append((name, acked, got))
        if got > sent:
            extra.append((name, sent, got))
    return {"dead_letters": len(letters), "by_reason": dict(reasons),
            "malformed_sent": manifest.totals.get("malformed", 0),
            "malformed_dead_lettered": sum(len(v) for v in distinct.values()),
            "malformed_not_counted": short[:20], "dead_letters_unaccounted": extra[:20],
            "dead_lettered_but_delivered": also_delivered[:20],
            "ok": not (short or extra or also_delivered)}


def delivered_keys(records: Records) -> dict[str, set[tuple[str, int, int]]]:
    """(device, boot, seq) of every decodable delivered reading, by topic."""
    out: dict[str, set[tuple[str, int, int]]] = {}
    for topic, recs in records.items():
        keys = set()
        for r in recs.values():
            msg = json.loads(r.value) if r.value[:1] == b"{" else None
            if msg:
                keys.add((msg["device"], msg.get("boot", 0), msg["seq"]))
        out[topic] = keys
    return out
