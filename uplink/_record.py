"""The edge record, on its own so that both the message types and the column form
(``_block``) can use it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

Headers: TypeAlias = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class UplinkRecord:
    """One record of the edge log: its edge offset, device key, time (ms) and payload."""

    offset: int
    key: bytes
    timestamp: int
    value: bytes
    headers: Headers = ()
