"""``[[streams.transforms]]`` in edge.toml: checked at load, turned into operations.

Strategy: a transform table is validated completely when the config is loaded (its
expression compiled, its fields and numbers checked), so a mistake stops ``edge-agent
check-config`` and ``run`` with one error naming the transform and the expression
(``streams[0].transforms[1].expr: filter: cannot parse 'temp >': ...``), never the
stream at the first reading. The spec is a frozen value; ``build_chain`` makes fresh
operations (with their state) from it each time the runner starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tomlconf import ConfigError, Section
from uplink import is_safe_name

from .expr import Expression, ExpressionError
from .ops import AGGREGATES, Deadband, DownsampleFirst, Filter, Item, Op, Route, Window

KINDS = ("filter", "route", "deadband", "on_change", "downsample", "window")
_COMMON = {"type", "on_unfit", "max_devices"}
_KEYS = {
    "filter": {"expr"},
    "route": {"expr", "to", "priority", "cloud_topic", "copy"},
    "deadband": {"field", "threshold", "heartbeat_s"},
    "on_change": {"field", "heartbeat_s"},
    "downsample": {"interval_s", "mode", "fields"},
    "window": {"size_s", "lateness_s", "fields", "aggregates"},
}
#: the most transforms per stream, and fields per window (bounded work per reading)
MAX_TRANSFORMS = 32
MAX_FIELDS = 32


@dataclass(frozen=True, slots=True)
class TransformSpec:
    kind: str
    index: int
    expr: str = ""
    to: str = ""
    priority: int | None = None
    cloud_topic: str = ""
    copy: bool = False
    field: str = ""
    threshold: float = 0.0
    heartbeat_ms: int = 0
    interval_ms: int = 0
    lateness_ms: int = 0
    mode: str = "aggregate"
    fields: tuple[str, ...] = ()
    aggregates: tuple[str, ...] = ()
    on_unfit: str = "pass"
    max_devices: int = 100_000

    @property
    def name(self) -> str:
        return f"{self.index}:{self.kind}"


def _ms(d: Section, key: str, default: float, minimum: float) -> int:
    return round(d.number(key, default, minimum=minimum) * 1000)


def _field_name(s: str) -> bool:
    return 0 < len(s) <= 200


def _expression(d: Section, kind: str) -> str:
    text = d.get("expr")
    if not isinstance(text, str):
        raise d.error("expr", f"{kind}: an expression (JMESPath) is required")
    try:
        Expression(text)
    except ExpressionError as exc:
        raise d.error("expr", f"{kind}: cannot parse {text!r}: {exc}") from exc
    return text


def parse_transform(d: Section, index: int) -> TransformSpec:
    kind = d.get("type")
    if kind not in KINDS:
        raise d.error("type", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    d.only(_COMMON | _KEYS[kind], f"for a {kind} transform")
    common = {"kind": kind, "index": index,
              "on_unfit": d.string("on_unfit", "pass", choices=("pass", "drop")),
              "max_devices": d.integer("max_devices", 100_000, minimum=1)}
    if kind == "filter":
        return TransformSpec(**common, expr=_expression(d, kind))
    if kind == "route":
        to = d.string("to", None, check=is_safe_name, form="must be a stream name")
        if to is None:
            raise d.error("to", "route: the stream to send matching readings to is required")
        return TransformSpec(**common, expr=_expression(d, kind), to=to,
                             priority=d.integer("priority", None, minimum=0),
                             cloud_topic=d.string("cloud_topic", "", check=is_safe_name,
                                                  form="must be a topic name"),
                             copy=d.boolean("copy", False))
    if kind in ("deadband", "on_change"):
        fname = d.string("field", None, check=_field_name, form="a payload field name")
        if fname is None:
            raise d.error("field", f"{kind}: the field to watch is required")
        return TransformSpec(**common, field=fname,
                             threshold=d.number("threshold", 0.0, minimum=0.0),
                             heartbeat_ms=_ms(d, "heartbeat_s", 0.0, 0.0))
    fields = d.strings("fields", (), check=_field_name, form="a list of payload field names",
                       max_items=MAX_FIELDS)
    if kind == "downsample":
        mode = d.string("mode", "first", choices=("first", "last", "mean"))
        if mode == "mean" and not fields:
            raise d.error("fields", "downsample: mode mean needs the fields to average")
        interval = _ms(d, "interval_s", 0.0, 0.001) if d.has("interval_s") else 0
        if not interval:
            raise d.error("interval_s", "downsample: the interval is required")
        return TransformSpec(**common, interval_ms=interval, mode=mode, fields=fields,
                             aggregates=("count", "mean") if mode == "mean" else ())
    size = _ms(d, "size_s", 0.0, 0.001) if d.has("size_s") else 0
    if not size:
        raise d.error("size_s", "window: the window size is required")
    aggs = d.strings("aggregates", ("count", "mean"), check=lambda a: a in AGGREGATES,
                     form=f"a list of {', '.join(AGGREGATES)}")
    if not aggs:
        raise d.error("aggregates", "window: at least one aggregate is required")
    if any(a != "count" for a in aggs) and not fields:
        raise d.error("fields", "window: the fields to aggregate are required")
    return TransformSpec(**common, interval_ms=size, lateness_ms=_ms(d, "lateness_s", 0.0, 0.0),
                         fields=fields, aggregates=aggs)


def parse_transforms(stream: Section, payload: str) -> tuple[TransformSpec, ...]:
    tables = stream.tables("transforms")
    if not tables:
        return ()
    if len(tables) > MAX_TRANSFORMS:
        raise stream.error("transforms", f"at most {MAX_TRANSFORMS} transforms per stream")
    if not payload:
        raise stream.error("transforms", "transforms read payload fields: they need "
                                         "payload = json or cbor")
    return tuple(parse_transform(t, i) for i, t in enumerate(tables))


def derived_names(main: str, specs: tuple[TransformSpec, ...]) -> list[str]:
    """The derived streams a chain writes: its main output, then each route's target."""
    if not specs:
        return []
    return [main, *(s.to for s in specs if s.kind == "route")]


def build_chain(specs: tuple[TransformSpec, ...],
                send: Callable[[str, Item], None]) -> list[Op]:
    """Fresh operations (empty state) for a stream's transforms, in order."""
    ops: list[Op] = []
    for s in specs:
        common = {"name": s.name, "on_unfit": s.on_unfit, "max_devices": s.max_devices}
        if s.kind == "filter":
            ops.append(Filter(**common, expr=Expression(s.expr)))
        elif s.kind == "route":
            ops.append(Route(**common, expr=Expression(s.expr), to=s.to, copy=s.copy,
                             send=send))
        elif s.kind in ("deadband", "on_change"):
            ops.append(Deadband(**common, field_name=s.field, threshold=s.threshold,
                                heartbeat_ms=s.heartbeat_ms, any_change=s.kind == "on_change"))
        elif s.kind == "downsample" and s.mode == "first":
            ops.append(DownsampleFirst(**common, interval_ms=s.interval_ms))
        else:
            ops.append(Window(**common, size_ms=s.interval_ms, lateness_ms=s.lateness_ms,
                              fields=s.fields, aggregates=s.aggregates,
                              mode="last" if s.mode == "last" else "aggregate"))
    return ops


__all__ = ["KINDS", "ConfigError", "TransformSpec", "build_chain", "derived_names",
           "parse_transform",
           "parse_transforms"]
