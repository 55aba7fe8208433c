"""prepare.Preparer: a listener-fed pipeline (``routed``) does not route again, and the
usual reading's headers (built as one tuple) are those every other reading gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.config import parse_config
from edge_agent.deadletter import DeadLetterLog
from edge_agent.dedup import HighWaterMarks
from edge_agent.ingest import StreamIngest
from edge_agent.payload import PayloadRules
from edge_agent.prepare import headers_of
from edge_agent.streams import open_stream


def never(topic: str) -> str | None:
    raise AssertionError(f"routed again: {topic}")


def pipelines(tmp: Path, device_key: str) -> tuple[StreamIngest, StreamIngest]:
    """The same stream twice: fed by the listener (routed) and by Mosquitto (not)."""
    out = []
    for name, routed in (("a", True), ("b", False)):
        cfg = parse_config({"edge_id": "e1", "data_dir": str(tmp / name),
                            "ingest": {"epoch_field": "boot"},
                            "streams": [{"name": "t", "topics": ["devices/+/telemetry"],
                                         "device_key": device_key}]})
        sc = cfg.streams[0]
        rules = PayloadRules(payload=sc.payload, device_key=sc.device_key, epoch_field="boot")
        dl = DeadLetterLog(tmp / name, 1 << 20, 256, 5.0)
        out.append(StreamIngest("t", open_stream(cfg, sc), rules, HighWaterMarks(), dl,
                                never if routed else (lambda t: "t"), routed=routed))
    return out[0], out[1]


@pytest.mark.parametrize("device_key", ["topic:devices/{device}/telemetry", "field:device"])
def test_a_routed_pipeline_frames_every_reading_as_an_unrouted_one(
        tmp_path: Path, device_key: str) -> None:
    docs = [{"device": "d1", "seq": 1, "ts": 1_700_000_000_123},   # the usual reading
            {"device": "d1", "seq": 2, "ts": 1.7e12 + 0.5},          # ts in float ms
            {"device": "d1", "seq": 3},                               # no timestamp
            {"device": "d1", "seq": 1, "ts": 5, "boot": "b2"},        # a new boot epoch
            {"device": "d1", "ts": 7},                                # no sequence
            {"device": "d1", "seq": 1, "ts": 8, "boot": "b2"}]        # a duplicate
    msgs = [("devices/d1/telemetry", json.dumps(d).encode(), 1, i + 1, -1)
            for i, d in enumerate(docs)]
    routed, unrouted = pipelines(tmp_path, device_key)
    a, b = routed._prepare(list(msgs)), unrouted._prepare(list(msgs))
    assert [(r.key, r.value, r.headers) for r in a.records] == \
        [(r.key, r.value, r.headers) for r in b.records]
    assert a.acks == b.acks == [(i + 1, -1) for i in range(6)]
    assert len(a.records) == 5 and routed.stats.deduplicated == 1
    ct = ("content-type", b"application/json")
    with_topic = device_key.startswith("field:")  # the topic is not rebuilt from the key
    topic = "devices/d1/telemetry" if with_topic else None
    assert [r.headers for r in a.records] == [
        headers_of(ct, 1, "", topic, 1_700_000_000_123),
        headers_of(ct, 2, "", topic, int(1.7e12)),
        headers_of(ct, 3, "", topic, None),
        headers_of(ct, 1, "b2", topic, 5),
        headers_of(ct, None, "", topic, 7)]
    if with_topic:
        assert a.records[0].headers[2] == ("mqtt-topic", b"devices/d1/telemetry")
    else:
        assert a.records[0].headers == (ct, ("seq", b"1"), ("device-ts", b"1700000000123"))
    for ing in (routed, unrouted):
        ing.store.log.close()  # type: ignore[union-attr]
        ing.deadletters.close()


def test_the_unmatched_pipeline_still_dead_letters_when_routed(tmp_path: Path) -> None:
    dl = DeadLetterLog(tmp_path, 1 << 20, 256, 5.0)
    ing = StreamIngest("", None, None, None, dl, lambda t: None, routed=True)
    p = ing._prepare([("nowhere/x", b"{}", 1, 7, -1), ("nowhere/y", b"{}", 0, 0, -1)])
    assert [(d.reason, d.topic) for d in p.dead] == [("no_stream", "nowhere/x"),
                                                      ("no_stream", "nowhere/y")]
    assert p.acks == [(7, -1)] and not p.records
    dl.close()
