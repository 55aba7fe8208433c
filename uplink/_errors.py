"""Errors of the uplink protocol, split by blame.

Strategy: like h11, an error says *whose* fault it is, because the two sides
react differently.  Our own misuse (building an invalid batch, asking for an
unknown compression) is a bug in the caller and raises ``LocalProtocolError``.
Bytes from the peer that break the protocol raise ``RemoteProtocolError``; the
broker turns those into 4xx replies and keeps serving (G7), the agent logs them
and retries.  The HTTP adapters map the most specific type to a status code, so
the tree is shaped by what the adapters need to tell apart::

    UplinkError
    ├── LocalProtocolError          our misuse; a bug, not a peer problem
    └── RemoteProtocolError         the peer sent something that breaks the protocol
        ├── MalformedBatch          a bad batch body            -> 400 {"error", "field"}
        │   ├── BodyTooLarge        over the size limit         -> 413
        │   └── UnsupportedEncoding unknown Content-Encoding    -> 415
        └── MalformedReply          a bad ack/refusal body (agent side)
"""

from __future__ import annotations


def show(value: object, limit: int = 60) -> str:
    """A peer's value for an error message: never longer than ``limit``, never failing.

    ``repr`` of an int past 4300 digits raises (Python's int-to-str limit) and a peer's
    8 MB string would fill the reply, so integers are shown by size when large and
    everything else is cut.
    """
    if type(value) is int and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else text[:limit] + "..."


class UplinkError(Exception):
    """Base class of every error this package raises."""


class LocalProtocolError(UplinkError):
    """We misused the API: the caller built or asked for something invalid."""


class RemoteProtocolError(UplinkError):
    """The peer sent something that breaks the protocol."""


class _FieldError(RemoteProtocolError):
    # Both malformed-body errors name the offending field so a human reading a
    # 400 reply (or an agent log line) knows where to look without a hex dump.
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def to_dict(self) -> dict[str, str]:
        """The JSON body of the broker's error reply: ``{"error": ..., "field": ...}``."""
        return {"error": self.message, "field": self.field}


class MalformedBatch(_FieldError):
    """A batch body could not be decoded; ``field`` names the part that was wrong."""


class BodyTooLarge(MalformedBatch):
    """The (decompressed) body is over the configured limit; a zip bomb ends here."""


class UnsupportedEncoding(MalformedBatch):
    """The Content-Encoding is not one we speak (identity, gzip, zstd)."""


class MalformedReply(_FieldError):
    """An ack or refusal body could not be decoded; ``field`` names the bad part."""
