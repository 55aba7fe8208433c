"""Expressions: the compiled closures agree with the jmespath library on generated
expressions and readings; bad expressions fail at load naming the transform and the
expression; hostile text is bounded; nothing a reading holds makes an expression raise."""

from __future__ import annotations

from typing import Any

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.config import parse_config
from edge_agent.transforms.expr import MAX_EXPRESSION, Expression, ExpressionError, is_true
from tomlconf import ConfigError

SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-3, 3),
                   st.sampled_from(["", "a", "ok", "3"]))
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=2), st.dictionaries(st.sampled_from("abc"), inner, max_size=3)),
    max_leaves=6)
READING = st.one_of(st.dictionaries(st.sampled_from("abc"), VALUE, max_size=3), VALUE)


def _literal(v: Any) -> str:
    import json
    return "`" + json.dumps(v) + "`"


LEAF = st.one_of(st.sampled_from(["a", "b", "c", "a.b", "b.c.a", "@"]),
                 SCALAR.map(_literal), st.sampled_from(["'ok'", "'a'", "''"]))
EXPR = st.recursive(LEAF, lambda e: st.one_of(
    st.tuples(e, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), e).map(" ".join),
    st.tuples(e, st.sampled_from(["&&", "||"]), e).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    e.map(lambda x: f"!({x})")), max_leaves=5)


_RAISES = object()


def reference(text: str, reading: Any) -> Any:
    try:
        return jmespath.search(text, reading)
    except TypeError:  # the library raises on 'a' < `1`: no match
        return _RAISES


@settings(max_examples=600, deadline=None)
@given(EXPR, READING)
def test_compiled_expressions_agree_with_the_library(text: str, reading: Any) -> None:
    e = Expression(text)
    assert e.compiled
    want = reference(text, reading)
    if want is _RAISES:
        with pytest.raises(TypeError):
            e.value(reading)
        assert e.matches(reading) is False
        return
    got = e.value(reading)
    assert e.matches(reading) == is_true(want)
    assert type(got) is type(want) and got == want


def test_functions_fall_back_to_the_library() -> None:
    e = Expression("contains(tags, 'x') && length(name) > `2`")
    assert not e.compiled
    assert e.matches({"tags": ["x"], "name": "pump"})
    assert not e.matches({"tags": "nope", "name": 3})  # a type error is no match


@pytest.mark.parametrize("text", ["temp >", "a[", "&&", "foo(", "", "   ", "a ==== b"])
def test_bad_expressions_are_refused(text: str) -> None:
    with pytest.raises(ExpressionError):
        Expression(text)


def test_hostile_expression_text_is_bounded() -> None:
    with pytest.raises(ExpressionError, match="longer than"):
        Expression("a || " * MAX_EXPRESSION)
    with pytest.raises(ExpressionError):
        Expression("(" * 900 + "a" + ")" * 99)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_either_compiles_or_is_a_clear_error(text: str) -> None:
    try:
        e = Expression(text)
    except ExpressionError as exc:
        assert str(exc)
        return
    for reading in ({}, {"a": [1, {"b": None}]}, "x", None, [1, 2]):
        assert e.matches(reading) in (True, False)


def _cfg(transforms: str, payload: str = "json") -> dict[str, Any]:
    import tomllib
    return tomllib.loads(f"""
edge_id = "gw"
data_dir = "/tmp/x"
[[streams]]
name = "telemetry"
topics = ["devices/+/telemetry"]
payload = "{payload}"
{transforms}
""")


@pytest.mark.parametrize(("table", "key", "needle"), [
    ('type = "filter"\nexpr = "temp >"', "streams[0].transforms[0].expr",
     "filter: cannot parse 'temp >'"),
    ('type = "route"\nexpr = "alarm"', "streams[0].transforms[0].to", "route"),
    ('type = "deadband"\nfield = "t"\nthreshold = "big"', "streams[0].transforms[0].threshold",
     "must be a number"),
    ('type = "window"\nsize_s = 60\nfields = ["t"]\naggregates = ["median"]',
     "streams[0].transforms[0].aggregates", "count, min"),
    ('type = "window"\nfields = ["t"]', "streams[0].transforms[0].size_s", "required"),
    ('type = "downsample"\ninterval_s = 1\nmode = "mean"', "streams[0].transforms[0].fields",
     "mean"),
    ('type = "deadband"\nfield = "t"\nexpr = "a"', "streams[0].transforms[0].expr",
     "unknown key for a deadband transform"),
    ('type = "lua"', "streams[0].transforms[0].type", "must be one of"),
    ('type = "filter"\nexpr = "a"\non_unfit = "explode"', "streams[0].transforms[0].on_unfit",
     "pass, drop"),
])
def test_config_errors_name_the_transform(table: str, key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_cfg(f"[[streams.transforms]]\n{table}\n"))
    assert info.value.key == key
    assert needle in str(info.value)


def test_transforms_need_a_payload_format_and_unique_derived_names() -> None:
    with pytest.raises(ConfigError, match="payload = json or cbor"):
        parse_config(_cfg('[[streams.transforms]]\ntype = "filter"\nexpr = "a"\n', ""))
    with pytest.raises(ConfigError, match="false needs transforms"):
        parse_config(_cfg("forward = false\n"))
    with pytest.raises(ConfigError, match="name of a stream of readings"):
        parse_config(_cfg('[[streams.transforms]]\ntype = "route"\nexpr = "a"\n'
                          'to = "telemetry"\n'))
    cfg = parse_config(_cfg('[[streams.transforms]]\ntype = "route"\nexpr = "a"\nto = "al"\n'
                            'priority = 0\n'))
    from edge_agent.edgeproc import derived_streams
    assert [(d.name, d.priority, src) for d, src in derived_streams(cfg)] == [
        ("telemetry-edge", 5, "telemetry"), ("al", 0, "telemetry")]
