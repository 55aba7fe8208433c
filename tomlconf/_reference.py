"""Configuration references generated from the validators themselves.

Strategy: validation is plain code, not a schema, so the reference is recorded from that
code: while ``recording()`` is active, every ``Section`` getter notes the key it reads,
its kind, default, bounds or choices, and the value it found (``note``; outside a
recording it returns at once). A program runs its own parse function on sample
documents that reach every table (a topic, a token, a mirror of each target...) and
renders what was noted (``reference``). The reference cannot list a key the validator
does not read, nor miss one it reads; the program gives one line of meaning per key and
its test checks that the two key sets are equal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SECTION_KINDS = ("table", "array of tables", "named tables")
_RANK = {"known": 0, "required": 1, "value": 2}  # typed getters rank above these


@dataclass
class Note:
    key: str
    kind: str
    default: Any
    want: str = ""
    value: Any = None
    secret: bool = False


@dataclass
class Key:
    """One key of the reference, merged from every note about it."""

    key: str
    kind: str = "value"
    default: Any = None
    want: str = ""
    example: Any = None
    secret: bool = False
    required: bool = False
    known: set[str] = field(default_factory=set)  # for tables: the keys ``only`` allows


_RECORDING: ContextVar[list[Note] | None] = ContextVar("tomlconf_recording", default=None)


def note(section: Any, key: str, kind: str, default: Any, want: Any = "", *,
         secret: bool = False) -> None:
    """Called by every Section getter; records only inside ``recording()``."""
    notes = _RECORDING.get()
    if notes is None:
        return
    if kind == "known":
        notes.append(Note(section.name, kind, None, want, default))
        return
    notes.append(Note(section.key(key), kind, default, str(want or ""),
                      None if secret else section.raw.get(key), secret))


@contextlib.contextmanager
def recording() -> Iterator[list[Note]]:
    """Within the block, every getter call is appended to the yielded list."""
    notes: list[Note] = []
    token = _RECORDING.set(notes)
    try:
        yield notes
    finally:
        _RECORDING.reset(token)


def collect(parse: Callable[[Any], object], samples: Iterable[Any],
            rename: Callable[[str], str] = lambda k: k) -> dict[str, Key]:
    """Run ``parse`` on each sample (each must pass) and merge what its getters read;
    ``rename`` maps a sample's key to its reference form (``topics.t.x`` ->
    ``topics.<name>.x``)."""
    keys: dict[str, Key] = {}
    for sample in samples:
        with recording() as notes:
            parse(sample)
        for n in notes:
            name = rename(n.key)
            k = keys.setdefault(name, Key(name))
            if n.kind == "known":
                k.known |= {rename(f"{n.key}.{x}" if n.key else x) for x in n.value}
                continue
            if n.kind == "required":
                k.required = True
            elif _RANK.get(n.kind, 9) >= _RANK.get(k.kind, 9) and n.kind != "known":
                k.kind, k.default, k.want = n.kind, n.default, n.want or k.want
            k.secret |= n.secret
            if k.example is None and n.value is not None and n.kind not in _SECTION_KINDS:
                k.example = n.value
    return keys


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str | Path):
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple | frozenset | set):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference(keys: Mapping[str, Key], meaning: Mapping[str, str],
              types: Mapping[str, str] | None = None, title: str = "",
              defaults: Mapping[str, str] | None = None) -> str:
    """A markdown reference: one table per section, one row per key (key, type,
    default, example, meaning). ``types`` names the type of keys read raw (``get``),
    ``defaults`` a default that is a rule rather than a value ("2 x max_body_bytes")."""
    types, defaults = types or {}, defaults or {}
    sections: dict[str, list[Key]] = {}
    for name in sorted(keys, key=lambda n: (n.count(".") > 0, n)):
        k = keys[name]
        if not name or k.kind in _SECTION_KINDS or k.known:
            continue
        section = name.rpartition(".")[0]
        sections.setdefault(section, []).append(k)
    out = [title] if title else []
    for section in sorted(sections, key=lambda s: (s != "", s)):
        kind = keys[section].kind if section in keys else ""
        if kind not in _SECTION_KINDS and section in keys and keys[section].known:
            kind = "table"
        head = ("Top level" if not section else
                f"[[{section}]]" if kind == "array of tables" else f"[{section}]")
        out += [f"### {head}", ""]
        if section and meaning.get(section):
            out += [meaning[section], ""]
        out += ["| key | type | default | example | meaning |", "|---|---|---|---|---|"]
        for k in sections[section]:
            typ = types.get(k.key) or k.kind + (f" ({k.want})" if k.want else "")
            default = (defaults[k.key] if k.key in defaults else
                       "required" if k.required else
                       "none" if k.default is None else toml_value(k.default))
            example = "" if k.secret or k.example is None else toml_value(k.example)
            out.append(f"| `{k.key.rpartition('.')[2]}` | {_cell(typ)} | "
                       f"{_cell(default)} | {_cell(example) and f'`{_cell(example)}`'} | "
                       f"{_cell(meaning.get(k.key, ''))} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


__all__ = ["Key", "Note", "collect", "note", "recording", "reference", "toml_value"]
