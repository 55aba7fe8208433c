"""tomlconf: how every edgestream process reads its configuration.

Why a package of its own, at the bottom beside ``shared_log`` and ``uplink``: the edge
agent (edge.toml), the cloud broker (cloud.toml, ``[mirrors.<name>]`` and the JSON body
of ``POST /v1/mirrors``) and the device simulator (its command-line options) never import
each other, yet a mistake in any of them must read the same way - one line naming the key
and what it wants (``streams[1].full_policy: must be one of drop_oldest, reject_new, got
'drop'``) - and be caught by one exception type. This package imports nothing of ours, so
each of the three can depend on it without depending on another.

The rooms::

    _errors.py    ConfigError (the one exception), and credentials masked in its message
    _section.py   Section: one table being validated; typed getters that name the key
    _net.py       listen addresses, URLs and host names
    _load.py      reading a TOML file, and environment overrides (PREFIX__SECTION__KEY)
    _reference.py a reference of every key, recorded from the getters as they validate

Strategy: validation is plain code over the parsed document (tomllib's dicts) into the
caller's frozen dataclasses, in one pass at start: no schema language, no coercion. A
value is checked where it is read, so the check and the key in the error cannot drift.
Absent keys (and JSON ``null``) take the caller's default, which is not re-checked.
"""

from ._errors import MASK, ConfigError, mask_secrets, shown
from ._load import apply_env, load_toml
from ._net import check_ca_file, is_host, parse_listen, parse_url, parse_urls
from ._reference import Key, collect, recording, reference
from ._section import Section

__all__ = ["MASK", "ConfigError", "Key", "Section", "apply_env", "check_ca_file", "collect",
           "is_host", "load_toml", "mask_secrets", "parse_listen", "parse_url", "parse_urls",
           "recording", "reference", "shown"]
