"""Listen addresses and URLs in configuration: checked once, with the key in the error.

The checks are the shared configuration toolkit's (``tomlconf/_net.py``), so the broker,
its mirrors and the edge agent refuse the same mistakes with the same words; this module
keeps the names the broker's modules use (``check_url`` is ``tomlconf.parse_url``).
"""

from __future__ import annotations

from tomlconf import parse_listen
from tomlconf import parse_url as check_url

__all__ = ["check_url", "parse_listen"]
