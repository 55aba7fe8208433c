"""Each transform against a small reference implementation on generated readings
(Hypothesis): the same output, item for item, and state that survives a checkpoint
(``state`` -> JSON -> ``load``) at any point without changing the output."""

from __future__ import annotations

import json
from typing import Any

import jmespath
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.transforms.expr import is_true
from edge_agent.transforms.ops import Item
from edge_agent.transforms.spec import TransformSpec, build_chain

DEVICES = st.sampled_from(["a", "b", "c"])
VALUE = st.one_of(st.integers(-50, 50), st.floats(-50, 50, allow_nan=False),
                  st.none(), st.text(max_size=2), st.booleans())
READING = st.tuples(DEVICES, st.integers(0, 400), st.fixed_dictionaries(
    {"v": VALUE}, optional={"w": st.integers(-5, 5), "alarm": st.booleans()}))
READINGS = st.lists(READING, max_size=80)


def items(readings: list[tuple[str, int, Any]]) -> list[Item]:
    """Event times wander forward with jitter (late readings happen)."""
    out, t = [], 0
    for off, (dev, jump, fields) in enumerate(readings):
        t += jump
        ts = max(0, t - (jump % 7) * 60)
        out.append(Item(dev, fields, ts, off, off, json.dumps(fields).encode()))
    return out


def run(spec: TransformSpec, its: list[Item], cut: int | None = None
        ) -> tuple[list[tuple[str, str, int, int, int]], list[Any]]:
    """Outputs as (target, value, ts, lo, hi); with ``cut``, the state goes through JSON
    after ``cut`` items and a fresh chain continues from it."""
    routed: list[tuple[str, Item]] = []
    out: list[Item] = []
    ops = build_chain((spec,), lambda t, i: routed.append((t, i)))
    for n, it in enumerate(its):
        if n == cut:
            state = json.loads(json.dumps(ops[0].state()))
            stats = ops[0].stats
            ops = build_chain((spec,), lambda t, i: routed.append((t, i)))
            ops[0].load(state) if state is not None else None
            ops[0].stats = stats
        ops[0].push(it, out.append)
    rows = [("main", i.value().decode(), i.ts, i.lo, i.hi) for i in out]
    rows += [(t, i.value().decode(), i.ts, i.lo, i.hi) for t, i in routed]
    return rows, [ops[0].stats]


def num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


# -- references: the plainest loops that say what each transform means ---------------------

def ref_filter(expr: str, its: list[Item]) -> list[Item]:
    def keep(it: Item) -> bool:
        try:
            return is_true(jmespath.search(expr, it.fields))
        except (TypeError, jmespath.exceptions.JMESPathError):
            return False
    return [it for it in its if keep(it)]


def ref_deadband(its: list[Item], thr: float, beat: int, change: bool) -> list[Item]:
    last: dict[str, tuple[Any, int]] = {}
    out = []
    for it in its:
        v = it.fields.get("v")
        if v is None or (not change and not num(v)):
            out.append(it)  # unfit: passed
            continue
        if it.device in last:
            pv, pts = last[it.device]
            moved = (pv != v or type(pv) is not type(v)) if change else abs(v - pv) > thr
            if not (moved or (beat and it.ts - pts >= beat)):
                continue
        last[it.device] = (v, it.ts)
        out.append(it)
    return out


def ref_first(its: list[Item], interval: int) -> list[Item]:
    seen: dict[str, int] = {}
    out = []
    for it in its:
        b = it.ts // interval
        if seen.get(it.device, -1) < b:
            seen[it.device] = b
            out.append(it)
    return out


def ref_window(its: list[Item], size: int, late: int, aggs: tuple[str, ...]
               ) -> list[tuple[str, str, int, int, int]]:
    wm = -1
    open_: dict[tuple[str, int], list[Item]] = {}
    out = []
    for it in its:
        if not num(it.fields.get("v")):
            out.append(("main", it.value().decode(), it.ts, it.lo, it.hi))
            continue
        wm = max(wm, it.ts)
        start = it.ts - it.ts % size
        if start + size + late > wm:
            open_.setdefault((it.device, start), []).append(it)
        for dev, s in sorted(open_, key=lambda k: (k[1] + size, k[0], k[1])):
            if s + size + late <= wm:
                group = open_.pop((dev, s))
                vs = [g.fields["v"] for g in group]
                doc: dict[str, Any] = {"device": dev, "start": s, "end": s + size}
                total = 0
                for v in vs:
                    total += v
                every = {"min": min(vs), "max": max(vs), "sum": total, "first": vs[0],
                         "last": vs[-1], "mean": total / len(vs)}
                for a in aggs:
                    if a == "count":
                        doc["count"] = len(vs)
                    else:
                        doc[f"v_{a}"] = every[a]
                out.append(("main", json.dumps(doc, separators=(",", ":"), sort_keys=True),
                            s + size, min(g.lo for g in group), max(g.hi for g in group)))
    return out


def rows(its: list[Item]) -> list[tuple[str, str, int, int, int]]:
    return [("main", i.value().decode(), i.ts, i.lo, i.hi) for i in its]


CUT = st.one_of(st.none(), st.integers(0, 80))


@settings(max_examples=150, deadline=None)
@given(READINGS, st.sampled_from(["v > `0`", "v == `true` || w < `0`", "!v",
                                  "alarm && v >= `10`", "length(to_string(v)) > `2`"]), CUT)
def test_filter_matches_reference(readings: Any, expr: str, cut: int | None) -> None:
    its = items(readings)
    got, (stats,) = run(TransformSpec("filter", 0, expr=expr), its, cut)
    want = ref_filter(expr, its)
    assert got == rows(want)
    assert stats.dropped == len(its) - len(want)


@settings(max_examples=150, deadline=None)
@given(READINGS, st.sampled_from([0.0, 1.0, 7.5]), st.sampled_from([0, 100, 1000]),
       st.booleans(), CUT)
def test_deadband_and_on_change_match_reference(readings: Any, thr: float, beat: int,
                                                change: bool, cut: int | None) -> None:
    its = items(readings)
    spec = TransformSpec("on_change" if change else "deadband", 0, field="v", threshold=thr,
                         heartbeat_ms=beat)
    got, _ = run(spec, its, cut)
    assert got == rows(ref_deadband(its, thr, beat, change))


@settings(max_examples=150, deadline=None)
@given(READINGS, st.sampled_from([1, 50, 500]), CUT)
def test_downsample_first_matches_reference(readings: Any, interval: int,
                                            cut: int | None) -> None:
    its = items(readings)
    got, _ = run(TransformSpec("downsample", 0, interval_ms=interval, mode="first"), its, cut)
    assert got == rows(ref_first(its, interval))


@settings(max_examples=200, deadline=None)
@given(READINGS, st.sampled_from([50, 200, 1000]), st.sampled_from([0, 100, 600]),
       st.sampled_from([("count",), ("count", "min", "max", "mean"), ("sum", "first", "last")]),
       CUT)
def test_window_matches_reference(readings: Any, size: int, late: int, aggs: Any,
                                  cut: int | None) -> None:
    its = items(readings)
    spec = TransformSpec("window", 0, interval_ms=size, lateness_ms=late, fields=("v",),
                         aggregates=aggs)
    got, (stats,) = run(spec, its, cut)
    want = ref_window(its, size, late, aggs)
    assert got == want
    windows = [json.loads(w[1]) for w in want if "end" in json.loads(w[1])]
    assert stats.windows == len(windows)
    fit = [i for i in its if num(i.fields.get("v"))]
    if "count" in aggs:  # every fit reading is in one window, late, or still open
        assert sum(w["count"] for w in windows) + stats.late <= len(fit)


@settings(max_examples=100, deadline=None)
@given(READINGS, st.booleans())
def test_route_moves_or_copies_matching_readings(readings: Any, copy: bool) -> None:
    its = items(readings)
    spec = TransformSpec("route", 0, expr="alarm", to="alarms", copy=copy)
    got, _ = run(spec, its)
    alarms = [i for i in its if i.fields.get("alarm") is True]
    rest = its if copy else [i for i in its if i.fields.get("alarm") is not True]
    assert [g for g in got if g[0] == "alarms"] == [("alarms", *r[1:]) for r in rows(alarms)]
    assert [g for g in got if g[0] == "main"] == rows(rest)


def test_unfit_readings_pass_or_drop_as_configured() -> None:
    its = items([("a", 10, {"v": "hot"}), ("a", 10, {"v": 1}), ("b", 10, {"x": 1})])
    passed, (st1,) = run(TransformSpec("window", 0, interval_ms=1000, fields=("v",),
                                       aggregates=("mean",)), its)
    assert [r[3] for r in passed] == [0, 2] and st1.unfit == 2
    dropped, (st2,) = run(TransformSpec("deadband", 0, field="v", on_unfit="drop"), its)
    assert [r[3] for r in dropped] == [1] and st2.unfit == 2


def test_device_state_is_bounded() -> None:
    its = items([(f"d{i}", 1, {"v": i}) for i in range(50)])
    ops = build_chain((TransformSpec("window", 0, interval_ms=10_000, fields=("v",),
                                     aggregates=("count",), max_devices=5),), lambda t, i: None)
    out: list[Item] = []
    for it in its:
        ops[0].push(it, out.append)
    assert len(ops[0].open) == 5 and len(out) == 45  # the least recent emitted early


@settings(max_examples=100, deadline=None)
@given(READINGS, st.sampled_from([50, 500]), st.sampled_from(["last", "mean"]), CUT)
def test_downsample_last_and_mean_match_reference(readings: Any, interval: int, mode: str,
                                                  cut: int | None) -> None:
    its = items(readings)
    spec = TransformSpec("downsample", 0, interval_ms=interval, mode=mode,
                         fields=("v",) if mode == "mean" else (),
                         aggregates=("count", "mean") if mode == "mean" else ())
    got, _ = run(spec, its, cut)
    if mode == "mean":
        assert got == ref_window(its, interval, 0, ("count", "mean"))
        return
    # last: per device and interval, the last reading itself, once the interval closed
    wm, open_, want = -1, {}, []
    for it in its:
        wm = max(wm, it.ts)
        start = it.ts - it.ts % interval
        if start + interval > wm:
            open_.setdefault((it.device, start), []).append(it)
        for dev, s in sorted(open_, key=lambda k: (k[1] + interval, k[0], k[1])):
            if s + interval <= wm:
                group = open_.pop((dev, s))
                last = group[-1]
                want.append(("main", last.value().decode(), last.ts,
                             min(g.lo for g in group), max(g.hi for g in group)))
    assert got == want


def test_edge_agent_status_prints_the_bytes_ratio(capsys: Any) -> None:
    from edge_agent.status_view import render
    render({"edge_id": "gw", "source": "agent", "healthy": True, "streams": [],
            "transforms": [{"stream": "telemetry", "readings_in": 1000, "records_out": 10,
                            "bytes_in": 150_000, "bytes_out": 1_500, "ratio": 100.0,
                            "lag": 3, "transforms": [{"late": 2, "unfit": 1}]}],
            "derived_streams": [{"name": "telemetry-edge", "priority": 5,
                                 "end_offset": 10, "acked_offset": 9}]})
    out = capsys.readouterr().out
    assert "100.0x" in out and "telemetry-edge" in out and "146.5KiB" in out


def test_state_with_cbor_values_survives_a_checkpoint() -> None:
    """on_change over a CBOR byte string, and downsample last of CBOR readings: the
    checkpoint's JSON keeps bytes exactly, so the output after a restart is the same."""
    import cbor2

    from edge_agent.transforms.runner import _special, _unspecial

    docs = [{"v": bytes([i % 3 // 2]), "n": i} for i in range(40)]
    its = [Item("a", d, i * 30, i, i, cbor2.dumps(d)) for i, d in enumerate(docs)]

    def rows_of(out: list[Item]) -> list[tuple[bytes, int, int, int]]:
        return [(i.value(), i.ts, i.lo, i.hi) for i in out]

    for spec in (TransformSpec("on_change", 0, field="v"),
                 TransformSpec("downsample", 0, interval_ms=100, mode="last")):
        whole: list[Item] = []
        ops = build_chain((spec,), lambda t, i: None)
        for it in its:
            ops[0].push(it, whole.append)
        out: list[Item] = []
        ops = build_chain((spec,), lambda t, i: None)
        for it in its[:17]:
            ops[0].push(it, out.append)
        state = json.loads(json.dumps(ops[0].state(), default=_special),
                           object_hook=_unspecial)
        ops = build_chain((spec,), lambda t, i: None)
        ops[0].load(state)
        for it in its[17:]:
            ops[0].push(it, out.append)
        assert len(whole) > 5 and rows_of(out) == rows_of(whole), spec.kind


def test_numbers_a_transform_keeps_fit_a_64_bit_checkpoint() -> None:
    from edge_agent.transforms.ops import _number
    assert _number(2**63 - 1) and _number(-(2**63)) and _number(1.5)
    assert not _number(2**63) and not _number(10**5000) and not _number(float("nan"))
    assert not _number(True) and not _number("1")


@settings(max_examples=200, deadline=None)
@given(READINGS, READINGS, st.sampled_from([
    TransformSpec("deadband", 0, field="v", threshold=1.0, heartbeat_ms=100),
    TransformSpec("downsample", 0, interval_ms=50, mode="first"),
    TransformSpec("window", 0, interval_ms=200, lateness_ms=100, fields=("v",),
                  aggregates=("count", "last"))]))
def test_a_state_is_a_snapshot_the_op_does_not_change_later(
        before: Any, after: Any, spec: TransformSpec) -> None:
    """The runner encodes a checkpoint's states in a thread while the event loop goes on
    pushing readings: a state taken must not move with the op."""
    its = items(before + after)
    (op,) = build_chain((spec,), lambda t, i: None)
    for it in its[:len(before)]:
        op.push(it, lambda i: None)
    state = op.state()
    frozen = json.dumps(state, sort_keys=True)
    for it in its[len(before):]:
        op.push(it, lambda i: None)
    assert json.dumps(state, sort_keys=True) == frozen
