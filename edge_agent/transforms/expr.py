"""Expressions over a reading's fields: JMESPath, parsed by ``jmespath``, never ``eval``.

Strategy: the grammar, the parser and the reference semantics are the ``jmespath``
library's (AWS's, used by boto3; pure Python, no code execution). Its tree walker costs
~6 us per reading, too slow for a gateway at 200k readings/s, so the common subset of
the tree (fields, sub-fields, literals, comparisons, ``&&``, ``||``, ``!``, ``@``) is
compiled here into nested closures with the *same* semantics as ``jmespath.visitor``
(JMESPath truthiness: ``0`` is true, ``""``/``[]``/``{}``/``null``/``false`` are false;
``<`` and friends compare numbers or strings, anything else is ``null``; ``true != 1``).
Any other node (functions, projections, slices ...) falls back to the library's own
search for the whole expression. ``tests/edge_agent/test_transform_expr.py`` checks the
two paths against each other on generated expressions and readings.

An expression that raises while evaluated (``'a' < `1` `` raises TypeError, in the
library and here alike) is no match: one odd reading never stops a stream (G7).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

Getter = Callable[[Any], Any]

#: the longest expression accepted (config text: bounded parse time)
MAX_EXPRESSION = 1000


class ExpressionError(ValueError):
    """An expression that does not parse; the message says where."""


def _num(x: Any) -> bool:
    t = type(x)
    return t is int or t is float or (isinstance(x, int | float) and t is not bool)


def _comparable(x: Any) -> bool:
    return _num(x) or isinstance(x, str)


def is_true(v: Any) -> bool:
    """JMESPath truthiness (jmespath.visitor.TreeInterpreter._is_false, negated)."""
    return not (v is None or v is False or v == "" or v == [] or v == {})


def _equals(x: Any, y: Any) -> bool:
    if (isinstance(x, bool) and _num(y)) or (isinstance(y, bool) and _num(x)):
        return False  # jmespath's special number case: true != 1, false != 0
    return bool(x == y)


_ORDER = {"lt": operator.lt, "gt": operator.gt, "lte": operator.le, "gte": operator.ge}


class _Unsupported(Exception):
    pass


def _compile(node: dict[str, Any]) -> Getter:
    kind = node["type"]
    kids = node.get("children", [])
    if kind == "field":
        name = node["value"]
        return lambda v: v.get(name) if isinstance(v, dict) else None
    if kind == "current":
        return lambda v: v
    if kind == "literal":
        const = node["value"]
        return lambda v: const
    if kind == "subexpression":
        parts = [_compile(k) for k in kids]

        def sub(v: Any) -> Any:
            for p in parts:
                v = p(v)
            return v
        return sub
    if kind in ("and_expression", "or_expression"):
        left, right = _compile(kids[0]), _compile(kids[1])
        if kind == "and_expression":
            return lambda v: r if not is_true(r := left(v)) else right(v)
        return lambda v: r if is_true(r := left(v)) else right(v)
    if kind == "not_expression":
        inner = _compile(kids[0])

        def not_(v: Any) -> bool:
            r = inner(v)
            if _num(r) and r == 0:
                return False
            return not r
        return not_
    if kind == "comparator":
        left, right = _compile(kids[0]), _compile(kids[1])
        op = node["value"]
        if op == "eq":
            return lambda v: _equals(left(v), right(v))
        if op == "ne":
            return lambda v: not _equals(left(v), right(v))
        cmp = _ORDER[op]

        fast = (int, float)

        def order(v: Any) -> Any:
            a, b = left(v), right(v)
            if not ((type(a) in fast or _comparable(a)) and (type(b) in fast or _comparable(b))):
                return None
            return cmp(a, b)  # a string against a number raises, as in the library
        return order
    raise _Unsupported(kind)


class Expression:
    """One compiled expression: ``value(reading)`` and ``matches(reading)``."""

    __slots__ = ("compiled", "matches", "text", "value")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ExpressionError("an expression must be a non-empty string")
        if len(text) > MAX_EXPRESSION:
            raise ExpressionError(f"longer than {MAX_EXPRESSION} characters")
        try:
            parsed = jmespath.compile(text)
        except JMESPathError as exc:
            raise ExpressionError(" ".join(str(exc).split())) from exc
        except RecursionError as exc:
            raise ExpressionError("nested too deeply") from exc
        self.text = text
        try:
            self.value: Getter = _compile(parsed.parsed)
            self.compiled = True
        except (_Unsupported, RecursionError):
            self.value = _library_search(parsed)
            self.compiled = False
        getter = self.value

        def matches(reading: Any) -> bool:
            try:
                r = getter(reading)
            except Exception:  # no reading may stop the stream (G7)
                return False
            if r is True or r is False or r is None:
                return r is True
            return is_true(r)
        self.matches: Callable[[Any], bool] = matches


def _library_search(parsed: Any) -> Getter:
    def search(v: Any) -> Any:
        try:
            return parsed.search(v)
        except (JMESPathError, TypeError, ValueError, RecursionError):
            return None
    return search


__all__ = ["MAX_EXPRESSION", "Expression", "ExpressionError", "is_true"]
