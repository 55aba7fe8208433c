"""The manifest: round trip through its file, and the expected/excluded seq sets."""

from __future__ import annotations

import json

import pytest

from device_simulator.manifest import DeviceRecord, Manifest, ManifestError


def _record() -> DeviceRecord:
    rec = DeviceRecord("dev-1", 1, "env", clock_skew_ms=-20)
    for seq in range(1, 21):
        rec.note_seq(seq)
        rec.sent += 1
    rec.alarm_seqs = [4, 9]
    rec.malformed_seqs = [5]
    rec.oversized_seqs = [6]
    rec.dropped_seqs = [7]
    rec.unconfirmed_seqs = [20]
    rec.duplicates = 2
    return rec


def test_expected_seqs_leave_out_corrupt_dropped_and_unconfirmed_ones():
    rec = _record()
    assert rec.expected_seqs("all") == set(range(1, 20)) - {5, 6, 7}
    assert rec.expected_seqs("telemetry") == set(range(1, 20)) - {4, 5, 6, 7, 9}
    assert rec.expected_seqs("alarm") == {4, 9}
    assert rec.excluded_seqs() == {5, 6, 7}
    assert DeviceRecord("dev-2", 2).expected_seqs() == set()


def test_a_manifest_round_trips_through_its_file(tmp_path):
    manifest = Manifest(run={"devices": 1, "seed": 3}, devices={"dev-1": _record()})
    manifest.compute_totals()
    path = tmp_path / "run.json"
    manifest.write(path)
    back = Manifest.read(path)
    assert back.devices["dev-1"] == _record()
    assert back.run == {"devices": 1, "seed": 3}
    assert back.totals == {"sent": 20, "duplicates": 2, "disconnects": 0, "alarm": 2,
                           "malformed": 1, "oversized": 1, "dropped": 1, "unconfirmed": 1,
                           "reboots": 0}
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("content", ["", "[]", '{"version": 1}', '{"version": 9, "devices": {}}',
                                     '{"version": 1, "devices": {"d": {"first_seq": 1}}}'])
def test_unreadable_manifests_raise_manifest_error(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ManifestError):
        Manifest.read(path)


def test_a_missing_manifest_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError):
        Manifest.read(tmp_path / "nope.json")


def test_seq_lists_are_written_sorted():
    rec = _record()
    rec.dropped_seqs = [9, 3, 5]
    assert rec.to_dict()["dropped_seqs"] == [3, 5, 9]
    assert json.loads(json.dumps(rec.to_dict()))["index"] == 1
