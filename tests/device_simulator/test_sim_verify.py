"""The verifier's analysis on constructed inputs: missing, duplicate, reordered, excluded."""

from __future__ import annotations

import pytest

from device_simulator import payloads
from device_simulator.manifest import DeviceRecord, Manifest
from device_simulator.verify import Analyzer, Observed, analyze, percentiles, ranges

T0 = 1_700_000_000_000


def _manifest(devices: int = 3, seqs: int = 10, **lists: dict[str, list[int]]) -> Manifest:
    records = {}
    for d in range(devices):
        name = f"dev-{d}"
        rec = DeviceRecord(name, d, "env")
        for seq in range(1, seqs + 1):
            rec.note_seq(seq)
            rec.sent += 1
        for field, per_device in lists.items():
            setattr(rec, field, list(per_device.get(name, [])))
        records[name] = rec
    manifest = Manifest(run={}, devices=records)
    manifest.compute_totals()
    return manifest


def _rec(device: str, seq: int, *, partition: int | None = None, offset: int = 0,
         latency: int = 40, fmt: str = "json", headers=()) -> Observed:
    ts = T0 + seq * 1000
    value = payloads.encode(payloads.telemetry(device, seq, ts, "env", {"temperature": 1.0}),
                            fmt)
    part = partition if partition is not None else int(device.split("-")[1]) % 4
    return Observed(part, offset, ts + latency, device.encode(), value, tuple(headers))


def _clean(devices: int = 3, seqs: int = 10) -> list[Observed]:
    return [_rec(f"dev-{d}", s) for s in range(1, seqs + 1) for d in range(devices)]


def test_a_complete_in_order_delivery_passes():
    report = analyze(_manifest(), _clean())
    assert report.ok
    d = report.to_dict()
    assert d["totals"]["expected"] == d["totals"]["delivered"] == 30
    assert d["totals"]["missing"] == d["totals"]["duplicates"] == d["totals"]["out_of_order"] == 0
    assert d["latency_ms"]["p50"] == d["latency_ms"]["max"] == 40.0
    assert d["per_device"]["dev-1"]["ok"]


def test_missing_records_are_reported_as_ranges_and_fail():
    records = [r for r in _clean() if not (r.key == b"dev-1" and 3 <= _seq(r) <= 5)]
    records = [r for r in records if not (r.key == b"dev-2" and _seq(r) == 10)]
    report = analyze(_manifest(), records)
    assert not report.ok
    d = report.to_dict()
    assert d["totals"]["missing"] == 4
    assert d["per_device"]["dev-1"]["missing_ranges"] == [[3, 5]]
    assert d["per_device"]["dev-2"]["missing_ranges"] == [[10, 10]]
    assert d["devices_with_problems"] == 2


def test_duplicates_are_counted_once_per_extra_copy_and_fail():
    records = _clean()
    records.insert(7, _rec("dev-0", 2))
    records.append(_rec("dev-0", 2))
    report = analyze(_manifest(), records)
    assert not report.ok
    assert report.to_dict()["per_device"]["dev-0"]["duplicates"] == 2
    assert report.total("missing") == 0 and report.total("out_of_order") == 0


def test_reordering_within_a_device_fails_but_interleaving_devices_does_not():
    records = _clean()
    # Interleaving devices is fine: reverse the order of devices within each seq.
    interleaved = [r for s in range(1, 11) for r in reversed(records[(s - 1) * 3:s * 3])]
    assert analyze(_manifest(), interleaved).ok
    # Seq 4 of dev-0 after seq 6.
    moved = [r for r in records if not (r.key == b"dev-0" and _seq(r) == 4)]
    at = next(i for i, r in enumerate(moved) if r.key == b"dev-0" and _seq(r) == 6)
    moved.insert(at + 1, _rec("dev-0", 4))
    report = analyze(_manifest(), moved)
    assert not report.ok
    assert report.to_dict()["per_device"]["dev-0"]["out_of_order"] == 1
    assert report.total("missing") == 0


def test_a_device_split_over_partitions_fails():
    records = _clean()
    records.append(_rec("dev-0", 11, partition=3))
    manifest = _manifest(seqs=11)
    records = [r for r in records if not (r.key != b"dev-0" and _seq(r) == 11)]
    manifest.devices["dev-1"].last_seq = manifest.devices["dev-2"].last_seq = 10
    report = analyze(manifest, records)
    assert report.total("split") == 1 and not report.ok


def test_malformed_and_oversized_sent_on_purpose_are_excluded_and_reported_apart():
    manifest = _manifest(malformed_seqs={"dev-0": [3]}, oversized_seqs={"dev-1": [4, 5]})
    records = [r for r in _clean() if not ((r.key == b"dev-0" and _seq(r) == 3)
                                          or (r.key == b"dev-1" and _seq(r) in (4, 5)))]
    report = analyze(manifest, records)
    assert report.ok
    d = report.to_dict()
    assert d["totals"]["expected"] == 27
    assert d["sent_on_purpose"]["malformed"] == 1 and d["sent_on_purpose"]["oversized"] == 2
    # If they do reach the topic they are counted apart, never as duplicates or errors.
    broken = payloads.malformed(_rec("dev-0", 3).value, 0)
    more = [*records, Observed(0, 0, T0, b"dev-0", broken), _rec("dev-1", 4)]
    report = analyze(manifest, more)
    assert report.ok
    d = report.to_dict()
    assert d["totals"]["malformed_received"] == 1 and d["totals"]["oversized_received"] == 1


def test_dropped_and_unconfirmed_seqs_are_not_expected():
    manifest = _manifest(dropped_seqs={"dev-0": [9]}, unconfirmed_seqs={"dev-1": [10]})
    records = [r for r in _clean() if not ((r.key == b"dev-0" and _seq(r) == 9)
                                          or (r.key == b"dev-1" and _seq(r) == 10))]
    report = analyze(manifest, records)
    assert report.ok, report.to_dict()["per_device"]
    # An unconfirmed seq may arrive; a dropped one must not.
    assert analyze(manifest, [*records, _rec("dev-1", 10)]).ok
    late = analyze(manifest, [*records, _rec("dev-0", 9)])
    assert late.total("unexpected") == 1


def test_kind_filters_alarms_in_or_out():
    manifest = _manifest(devices=1, alarm_seqs={"dev-0": [2, 7]})
    telemetry = [r for r in _clean(devices=1) if _seq(r) not in (2, 7)]
    alarms = [r for r in _clean(devices=1) if _seq(r) in (2, 7)]
    assert analyze(manifest, telemetry, kind="telemetry").ok
    assert analyze(manifest, alarms, kind="alarm").ok
    assert not analyze(manifest, telemetry, kind="all").ok
    mixed = analyze(manifest, _clean(devices=1), kind="telemetry")
    assert mixed.ok and mixed.total("other_kind") == 2
    with pytest.raises(ValueError):
        Analyzer(manifest, kind="other")


def test_unknown_devices_and_undecodable_records_are_reported_not_failed():
    records = [*_clean(), _rec("dev-99", 1), Observed(0, 0, T0, b"dev-0", b"\x00garbage")]
    report = analyze(_manifest(), records)
    assert report.ok
    d = report.to_dict()
    assert d["unknown_devices"] == ["dev-99"]
    assert d["totals"]["unknown_device_records"] == 1 and d["totals"]["undecodable"] == 1


def test_latency_corrects_clock_skew_and_can_use_a_header():
    manifest = _manifest(devices=1)
    manifest.devices["dev-0"].clock_skew_ms = 500  # device clock 500 ms ahead
    records = [_rec("dev-0", s, latency=520) for s in range(1, 11)]
    lat = analyze(manifest, records).latency()
    # The device stamped ts 500 ms ahead of true time: true latency is 520 + 500.
    assert lat is not None and lat["p50"] == 1020.0
    with_header = [r._replace(headers=(("rx_ms", str(r.timestamp + 7).encode()),))
                   for r in records]
    report = analyze(manifest, with_header, latency_header="rx_ms")
    assert report.latency()["p50"] == 1027.0
    assert "rx_ms" in report.latency_source


def test_cbor_payloads_and_incremental_feeding_give_the_same_report():
    records = [_rec(f"dev-{d}", s, fmt="cbor") for s in range(1, 11) for d in range(3)]
    analyzer = Analyzer(_manifest())
    analyzer.feed(records[:11])
    assert analyzer.missing_count() == 19
    analyzer.feed(records[11:])
    assert analyzer.missing_count() == 0
    assert analyzer.report().ok


def test_percentiles_and_ranges_helpers():
    assert percentiles([]) is None
    p = percentiles([float(x) for x in range(1, 101)])
    assert (p["p50"], p["p90"], p["p99"], p["max"], p["count"]) == (50.0, 90.0, 99.0, 100.0, 100)
    assert ranges([5, 1, 2, 3, 9, 10]) == [[1, 3], [5, 5], [9, 10]]


def _seq(r: Observed) -> int:
    message = payloads.decode(r.value)
    assert message is not None
    return message["seq"]
