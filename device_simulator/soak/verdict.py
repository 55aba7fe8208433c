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
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..manifest import Manifest
from ..verify import Analyzer, Observed, percentiles
from .configs import KIND_OF


class SoakVerdictError(Exception):
    """A downstream view could not be read."""


class MemberIndex:
    """What the group members received, one slot per (topic, partition, offset), in flat
    arrays (about 40 bytes a record: an hour at 5,000/s fits in well under a GB).

    A slot is filled by the first line for its offset; later lines for it are repeats.
    """

    def __init__(self) -> None:
        self.devices: list[str] = []
        self._dev_ids: dict[str, int] = {}
        self.parts: dict[tuple[str, int], dict[str, array]] = {}
        self.latency: dict[str, array] = defaultdict(lambda: array("f"))
        self.repeats = 0

    def _slots(self, topic: str, partition: int, offset: int) -> dict[str, array]:
        cols = self.parts.get((topic, partition))
        if cols is None:
            cols = self.parts[(topic, partition)] = {
                n: array("q") for n in ("dev", "boot", "seq", "ts", "dts")}
        if offset >= len(cols["dev"]):
            grow = max(offset + 1 - len(cols["dev"]), len(cols["dev"]) // 2, 1024)
            for name, col in cols.items():
                col.extend([-1 if name == "dev" else 0] * grow)
        return cols

    def add_line(self, text: str) -> None:
        parts = text.split()
        if len(parts) != 9 or not text.endswith("\n"):
            return  # a line torn by a SIGKILL
        topic, p, o, ts, recv, device, boot, seq, dts = parts
        offset = int(o)
        cols = self._slots(topic, int(p), offset)
        if cols["dev"][offset] != -1:
            self.repeats += 1
            return
        dev = self._dev_ids.get(device)
        if dev is None:
            dev = self._dev_ids[device] = len(self.devices)
            self.devices.append(device)
        cols["dev"][offset] = dev
        cols["ts"][offset] = int(ts)
        if seq == "-" or not boot.lstrip("-").isdigit():
            cols["seq"][offset] = -1  # undecodable downstream too
            return
        cols["boot"][offset], cols["seq"][offset] = int(boot), int(seq)
        cols["dts"][offset] = int(dts) if dts != "-" else 0
        if dts != "-":
            self.latency[topic].append(float(int(recv) - int(dts)))

    def read(self, paths: Iterable[Path]) -> MemberIndex:
        for path in paths:
            if path.exists():
                with open(path) as f:
                    for text in f:
                        self.add_line(text)
        return self

    def records(self, topic: str, gaps: dict[int, int]) -> Iterator[Observed]:
        """The topic's records in (partition, offset) order; unfilled slots below the
        highest filled one are counted in ``gaps``."""
        for (t, p), cols in sorted(self.parts.items()):
            if t != topic:
                continue
            dev, boot, seq, ts, dts = (cols[n] for n in ("dev", "boot", "seq", "ts", "dts"))
            filled = [o for o in range(len(dev)) if dev[o] != -1]
            if filled and filled[-1] + 1 - filled[0] != len(filled):
                gaps[p] = filled[-1] + 1 - filled[0] - len(filled)
            for o in filled:
                name = self.devices[dev[o]]
                yield Observed(p, o, ts[o], name.encode(),
                               _value(name, boot[o], seq[o], dts[o]))

    def keys(self) -> Iterator[tuple[str, int, int]]:
        """(device, boot, seq) of every decodable record."""
        for cols in self.parts.values():
            for d, b, q in zip(cols["dev"], cols["boot"], cols["seq"], strict=True):
                if d != -1 and q != -1:
                    yield self.devices[d], b, q


def _value(device: str, boot: int, seq: int, ts: int) -> bytes:
    if seq == -1:
        return b"\xff"
    doc: dict[str, Any] = {"device": device, "seq": seq, "ts": ts}
    if boot:
        doc["boot"] = boot
    return json.dumps(doc).encode()


def mirror_records(db: Path, gaps: dict[int, int]) -> Iterator[Observed]:
    """The mirror's rows in (partition, offset) order, streamed; gaps counted."""
    if not db.exists():
        return
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute('SELECT "partition", "offset", "timestamp", "key", "value" '
                           'FROM records ORDER BY "partition", "offset"')
        prev: tuple[int, int] | None = None
        for p, o, ts, key, value in rows:
            if prev is not None and prev[0] == p and o != prev[1] + 1:
                gaps[p] = gaps.get(p, 0) + o - prev[1] - 1
            prev = (p, o)
            k = key.encode() if isinstance(key, str) else bytes(key or b"")
            v = value.encode() if isinstance(value, str) else bytes(value or b"")
            yield Observed(p, o, ts, k, v)
    except sqlite3.Error as exc:
        raise SoakVerdictError(f"cannot read the mirror's {db.name}: {exc}") from exc
    finally:
        con.close()


def analyze(manifest: Manifest, topic: str,
            records: Callable[[dict[int, int]], Iterable[Observed]]) -> dict[str, Any]:
    """The verifier's report (totals, no per-device detail) plus the devices in trouble."""
    analyzer = Analyzer(manifest, kind=KIND_OF[topic])
    gaps: dict[int, int] = {}
    analyzer.feed(records(gaps))
    report = analyzer.report()
    out = report.to_dict(per_device=False)
    troubled = [(name, d) for name, d in sorted(report.devices.items())
                if not d.ok or d.unexpected]
    out["problems"] = {name: d.to_dict() for name, d in troubled[:20]}
    out["offset_gaps"] = gaps
    return out


def latency_figures(latency: dict[str, array]) -> dict[str, Any]:
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
              delivered: Iterable[tuple[str, int, int]]) -> dict[str, Any]:
    """Every malformed reading Mosquitto acknowledged is dead-lettered (counted once per
    distinct payload; a redelivery after a kill may add a copy); nothing dead-lettered
    was delivered; nothing a device dropped arrived."""
    from ..payloads import BOOT_FIELD, SEQ_FIELD, decode

    distinct: dict[str, set[bytes]] = defaultdict(set)
    reasons: dict[str, int] = defaultdict(int)
    lettered = set()
    for d in letters:
        reasons[d["reason"]] += 1
        if d["reason"] == "malformed":
            distinct[d["device"]].add(d["payload"])
        msg = decode(d["payload"])
        if msg is not None and isinstance(msg.get(SEQ_FIELD), int):
            lettered.add((d["device"], msg.get(BOOT_FIELD, 0), msg[SEQ_FIELD]))
    also_delivered = [k for k in delivered if k in lettered] if lettered else []
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
