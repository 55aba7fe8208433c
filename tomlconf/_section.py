"""``Section``: one table of a configuration document being validated.

Strategy: a ``Section`` wraps one parsed table and its place in the document (``mqtt``,
``streams[1]``, ``mirrors.dr``); each getter reads one key, checks its type and bounds and
returns it, or raises ``ConfigError`` naming ``<place>.<key>`` and what it wants::

    m = doc.section("mqtt", known={"host", "port"})   # an unknown key is refused
    port = m.integer("port", 1883, minimum=1, maximum=65535)

Rules every getter shares: an absent key (or a JSON ``null``) returns the default as
given; ``bool`` is never taken for a number (TOML and JSON keep them apart, Python does
not); numbers must be finite; a value echoed in an error is cut short (``shown``) and
masked (``ConfigError``); a ``secret`` value is never echoed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ._errors import ConfigError, shown
from ._reference import note

T = TypeVar("T")


class Section:
    """One table at ``name`` (``""`` for the document itself)."""

    __slots__ = ("name", "raw")

    def __init__(self, raw: Any, name: str = "", *, known: Iterable[str] | None = None,
                 what: str = "") -> None:
        if not isinstance(raw, Mapping):
            raise ConfigError(name or "(document)", "must be a table")
        self.raw: Mapping[str, Any] = raw
        self.name = name
        if known is not None:
            self.only(known, what)

    # -- places and errors ---------------------------------------------------------------

    def key(self, key: str) -> str:
        """The full name of ``key`` in the document (``mqtt.port``)."""
        return f"{self.name}.{key}" if self.name else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.key(key), message)

    def only(self, known: Iterable[str], what: str = "") -> None:
        """Refuse any key not in ``known`` (``what`` qualifies: "for a nats mirror")."""
        allowed = set(known)
        note(self, "", "known", sorted(allowed), what)
        for k in self.raw:
            if k not in allowed:
                qualifier = f" {what}" if what else ""
                raise self.error(str(k), f"unknown key{qualifier} "
                                         f"(known: {', '.join(sorted(allowed))})")

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def get(self, key: str, default: Any = None) -> Any:
        """The raw value (None when absent): for checks no getter below expresses."""
        note(self, key, "value", default)
        v = self.raw.get(key)
        return default if v is None else v

    # -- sub-tables ----------------------------------------------------------------------

    def section(self, key: str, *, known: Iterable[str] | None = None,
                what: str = "") -> Section:
        """The table at ``key`` (an empty one when absent)."""
        note(self, key, "table", None)
        v = self.raw.get(key)
        return Section({} if v is None else v, self.key(key), known=known, what=what)

    def tables(self, key: str) -> list[Section]:
        """An array of tables (``[[streams]]``): a section per element, ``key[i]``."""
        note(self, key, "array of tables", None)
        v = self.raw.get(key, [])
        if not isinstance(v, list):
            raise self.error(key, f"must be an array of tables ([[{key}]])")
        return [Section(t, f"{self.key(key)}[{i}]") for i, t in enumerate(v)]

    def named_tables(self, key: str, what: str = "tables") -> list[tuple[str, Any]]:
        """A table of named tables (``[topics.<name>]``): (name, raw table) pairs."""
        note(self, key, "named tables", None)
        v = self.raw.get(key, {})
        if not isinstance(v, Mapping):
            raise self.error(key, f"must be a table of {what}")
        return list(v.items())

    # -- scalars -------------------------------------------------------------------------

    def required(self, key: str, why: str = "") -> Any:
        note(self, key, "required", None, why)
        v = self.raw.get(key)
        if v is None:
            raise self.error(key, "is required" + (f": {why}" if why else ""))
        return v

    def integer(self, key: str, default: T, *, minimum: int,
                maximum: int | None = None) -> int | T:
        note(self, key, "integer", default, _bounds(minimum, maximum))
        v = self.raw.get(key)
        if v is None:
            return default
        if (not isinstance(v, int) or isinstance(v, bool) or v < minimum
                or (maximum is not None and v > maximum)):
            want = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
            raise self.error(key, f"must be an integer {want}, got {shown(v)}")
        return v

    def number(self, key: str, default: T, *, minimum: float,
               maximum: float | None = None) -> float | T:
        note(self, key, "number", default, _bounds(minimum, maximum))
        v = self.raw.get(key)
        if v is None:
            return default
        if (not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v)
                or v < minimum or (maximum is not None and v > maximum)):
            want = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
            raise self.error(key, f"must be a number {want}, got {shown(v)}")
        return float(v)

    def boolean(self, key: str, default: bool) -> bool:
        note(self, key, "boolean", default)
        v = self.raw.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.error(key, f"must be true or false, got {shown(v)}")
        return v

    def string(self, key: str, default: T, *, choices: Iterable[str] | None = None,
               check: Callable[[str], object] | None = None, form: str = "",
               nonempty: bool = False, secret: bool = False) -> str | T:
        """A string; ``choices`` lists the allowed values, or ``check`` (a predicate)
        with ``form`` (what it wants, "must match [A-Za-z0-9]...") judges it."""
        choices = tuple(choices) if choices is not None else None
        note(self, key, "secret string" if secret else "string", default,
             f"one of {', '.join(choices)}" if choices is not None else form, secret=secret)
        v = self.raw.get(key)
        if v is None:
            return default
        got = "" if secret else f", got {shown(v)}"
        if not isinstance(v, str) or (nonempty and not v):
            raise self.error(key, f"must be a {'non-empty ' if nonempty else ''}string{got}")
        if choices is not None and v not in (allowed := choices):
            raise self.error(key, f"must be one of {', '.join(allowed)}{got}")
        if check is not None and not check(v):
            raise self.error(key, f"{form or 'is not valid'}{got}")
        return v

    def strings(self, key: str, default: T, *, check: Callable[[str], object],
                form: str, max_items: int | None = None) -> tuple[str, ...] | T:
        """A list of strings, each passing ``check``; ``form`` says what it must be."""
        note(self, key, "list of strings", default, form)
        v = self.raw.get(key)
        if v is None:
            return default
        if (not isinstance(v, list) or (max_items is not None and len(v) > max_items)
                or not all(isinstance(s, str) and check(s) for s in v)):
            raise self.error(key, f"must be {form}")
        return tuple(v)

    def path(self, key: str, base: Path, default: T = None) -> Path | T:  # type: ignore[assignment]
        """A file or directory; relative paths are taken from ``base`` (the file's dir)."""
        note(self, key, "path", default, "relative to the file's directory")
        v = self.raw.get(key)
        if v is None:
            return default
        if not isinstance(v, str) or not v:
            raise self.error(key, f"must be a non-empty path string, got {shown(v)}")
        p = Path(os.path.expanduser(v))
        return p if p.is_absolute() else base / p


def _bounds(minimum: float, maximum: float | None) -> str:
    return f">= {minimum}" if maximum is None else f"{minimum}..{maximum}"
