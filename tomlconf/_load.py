"""Reading a TOML file, and environment variables that override its values.

Strategy: ``load_toml`` turns the two ways a file can fail (missing, not TOML) into a
``ConfigError`` keyed by the file's path. ``apply_env`` lets a deployment set any value
without editing the file - secrets especially: ``EDGE_AGENT__UPLINK__TOKEN=...`` sets
``uplink.token`` (prefix, then sections and key joined by double underscores, lower-cased;
a number selects an element of an array of tables, which must exist in the file). A value
is parsed as a TOML scalar when it parses (``2883``, ``true``, ``["a"]``), else taken as a
string. Overrides are applied to the raw document, before validation, so an override is
checked exactly like the file's own value.
"""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import ConfigError


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed document; ConfigError keyed by the path when missing or not TOML."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(str(p), "config file not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(str(p), "is a directory, not a config file") from exc
    except PermissionError as exc:
        raise ConfigError(str(p), "config file not readable (permission denied)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), f"invalid TOML: {exc}") from exc


def _env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_env(raw: Mapping[str, Any], environ: Mapping[str, str], prefix: str
              ) -> dict[str, Any]:
    """A copy of ``raw`` with every ``<prefix>SECTION__KEY`` variable applied."""
    out: dict[str, Any] = copy.deepcopy(dict(raw))
    for name, text in sorted(environ.items()):
        if not name.startswith(prefix):
            continue
        parts = [p.lower() for p in name[len(prefix):].split("__") if p]
        if not parts:
            continue
        target: Any = out
        for p in parts[:-1]:
            if isinstance(target, list):
                if not p.isdigit() or int(p) >= len(target):
                    raise ConfigError(name, f"no element {p} in this array of tables")
                target = target[int(p)]
                continue
            nxt = target.get(p)
            if not isinstance(nxt, dict | list):
                nxt = target[p] = {}
            target = nxt
        if not isinstance(target, dict):
            raise ConfigError(name, "must name a key of a table")
        target[parts[-1]] = _env_value(text)
    return out
