"""The values that cross the uplink: records, batches, acks and refusals.

Strategy: every message is a frozen, slotted dataclass that checks itself when
*we* build it, so a bug on our side fails loudly here (``LocalProtocolError``)
instead of as a 400 from the peer.  Bytes from the peer are checked by the
codec, which names the bad field (``MalformedBatch``) and then builds these
objects through ``Batch._trusted`` without checking twice: the decode path is
the broker's hot loop.  ``UplinkRecord`` has no check of its own for the same
reason; a record is checked when it joins a ``Batch``, the unit that is sent.

Edge ids, streams and generations end up in file and topic names on the
broker, so they must match ``SAFE_NAME_PATTERN`` and never contain ``..``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from ._block import RecordBlock
from ._errors import LocalProtocolError, MalformedReply, show
from ._record import UplinkRecord

Compression: TypeAlias = Literal["none", "gzip", "zstd"]

# Offsets and timestamps are Kafka longs; anything above would not fit the
# broker's logs or the consumers' wire format.
MAX_OFFSET = 2**63 - 1
MAX_TIMESTAMP = 2**63 - 1
#: Headers a record may carry: a stored record gains one more (its origin) and shared_log
#: counts them in a u16; a header name is framed with a u16 length.
MAX_HEADERS = 0xFFFF - 1
MAX_HEADER_NAME_BYTES = 0xFFFF

# \A...\Z, not ^...$: "$" also matches before a trailing newline.
SAFE_NAME_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


def is_safe_name(name: object) -> bool:
    """True if ``name`` is usable as a path or topic component on the broker.

    The pattern alone already rules out ``/``, a leading dot and empty names;
    ``..`` anywhere is refused as well so no name even looks like a traversal.
    """
    return isinstance(name, str) and SAFE_NAME_PATTERN.match(name) is not None and ".." not in name


def _is_int(value: object) -> bool:
    # bool is an int subclass; True is never a valid offset.
    return type(value) is int


def _is_offset(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_OFFSET


class AckStatus(enum.Enum):
    """What the broker did with the batch it acknowledges."""

    WRITTEN = "written"  # every record in the batch was written (new data or new generation)
    DUPLICATE = "duplicate"  # the whole range was already durable; nothing written
    PARTIAL = "partial"  # the range overlapped the durable prefix; only the tail was written


class RefusalCode(enum.Enum):
    """Why the broker refused a batch without writing it."""

    GAP = "gap"  # the batch starts after the expected offset; rewind to expected_offset


def _record_problem(record: object) -> str | None:
    if type(record) is not UplinkRecord:
        return "must be an UplinkRecord"
    if not _is_offset(record.offset):
        return "offset must be an int in [0, 2**63)"
    if type(record.key) is not bytes:
        return "key must be bytes"
    if not (_is_int(record.timestamp) and 0 <= record.timestamp <= MAX_TIMESTAMP):
        return "timestamp must be an int of milliseconds in [0, 2**63)"
    if type(record.value) is not bytes:
        return "value must be bytes"
    headers = record.headers
    if type(headers) is not tuple or (headers and not all(map(_is_header, headers))):
        return "headers must be a tuple of (str, bytes) tuples"
    return None


def _is_header(header: object) -> bool:
    return (
        type(header) is tuple
        and len(header) == 2
        and type(header[0]) is str
        and type(header[1]) is bytes
    )


@dataclass(frozen=True, slots=True)
class Batch:
    """Records of one (edge, stream, generation) covering edge offsets [base, last].

    ``last_offset`` is inclusive.  Offsets in the range without a record were
    lost on the edge (a corrupt segment, a full-disk drop) and are skipped: the
    broker still counts the whole range as delivered, so the edge never sends
    them again and never stalls on them.
    """

    edge_id: str
    stream: str
    generation: str
    base_offset: int
    last_offset: int
    #: a tuple of UplinkRecord, or a RecordBlock (columns) from ``trusted`` or the decoder
    records: Sequence[UplinkRecord]

    def __post_init__(self) -> None:
        for name in ("edge_id", "stream", "generation"):
            if not is_safe_name(getattr(self, name)):
                raise LocalProtocolError(f"{name} {getattr(self, name)!r} is not a safe name")
        if not _is_offset(self.base_offset):
            raise LocalProtocolError(f"base_offset {self.base_offset!r} is not an offset")
        if not _is_offset(self.last_offset) or self.last_offset < self.base_offset:
            raise LocalProtocolError(
                f"last_offset {self.last_offset!r} must be an offset >= base_offset"
            )

        if type(self.records) is not tuple and type(self.records) is not RecordBlock:
            raise LocalProtocolError("records must be a tuple or a RecordBlock")
        previous = self.base_offset - 1
        for index, record in enumerate(self.records):
            problem = _record_problem(record)
            if problem is not None:
                raise LocalProtocolError(f"records[{index}]: {problem}")
            if record.offset <= previous:
                raise LocalProtocolError(
                    f"records[{index}]: offset {record.offset} is not above {previous}"
                    " (offsets must increase and start at base_offset or later)"
                )
            previous = record.offset
        if previous > self.last_offset:
            raise LocalProtocolError(
                f"record offset {previous} is after last_offset {self.last_offset}"
            )

    @classmethod
    def trusted(
        cls,
        edge_id: str,
        stream: str,
        generation: str,
        base_offset: int,
        last_offset: int,
        records: Sequence[UplinkRecord],
    ) -> Batch:
        """A batch of records the caller read from its own checksummed log.

        Skips the per-record checks (they cost more than encoding on the edge's hot
        path); the position fields are still checked. ``records`` is a RecordBlock or a
        tuple of any objects with UplinkRecord's attributes (a shared_log StoredRecord
        has them), in increasing offset order within [base_offset, last_offset].
        """
        for name, value in (("edge_id", edge_id), ("stream", stream),
                            ("generation", generation)):
            if not is_safe_name(value):
                raise LocalProtocolError(f"{name} {value!r} is not a safe name")
        if not (_is_offset(base_offset) and _is_offset(last_offset)
                and base_offset <= last_offset):
            raise LocalProtocolError(f"bad range [{base_offset!r}, {last_offset!r}]")
        if records and not (base_offset <= records[0].offset
                            and records[-1].offset <= last_offset):
            raise LocalProtocolError("records fall outside [base_offset, last_offset]")
        return cls._trusted(edge_id, stream, generation, base_offset, last_offset, records)

    @classmethod
    def _trusted(
        cls,
        edge_id: str,
        stream: str,
        generation: str,
        base_offset: int,
        last_offset: int,
        records: Sequence[UplinkRecord],
    ) -> Batch:
        # For the decoder only: it has checked every field already, naming the
        # bad one, and the per-record loop above would double its cost.
        batch = object.__new__(cls)
        setter = object.__setattr__
        setter(batch, "edge_id", edge_id)
        setter(batch, "stream", stream)
        setter(batch, "generation", generation)
        setter(batch, "base_offset", base_offset)
        setter(batch, "last_offset", last_offset)
        setter(batch, "records", records)
        return batch


def _reply_field(data: Mapping[str, Any], name: str, ok: bool, what: str) -> None:
    if not ok:
        raise MalformedReply(name, f"{what}, got {show(data.get(name))}")


def _check_position(obj: Any) -> None:
    for name in ("edge_id", "stream", "generation"):
        if not is_safe_name(getattr(obj, name)):
            raise LocalProtocolError(f"{name} {getattr(obj, name)!r} is not a safe name")


@dataclass(frozen=True, slots=True)
class Ack:
    """The broker has made every offset up to ``acked_offset`` durable for this position.

    ``acked_offset`` is -1 when nothing of the generation is durable yet.
    """

    edge_id: str
    stream: str
    generation: str
    acked_offset: int
    status: AckStatus

    def __post_init__(self) -> None:
        _check_position(self)
        if not (_is_int(self.acked_offset) and -1 <= self.acked_offset <= MAX_OFFSET):
            raise LocalProtocolError(f"acked_offset {self.acked_offset!r} must be an int >= -1")
        if type(self.status) is not AckStatus:
            raise LocalProtocolError(f"status {self.status!r} must be an AckStatus")

    def to_dict(self) -> dict[str, Any]:
        """The JSON/CBOR form: plain str/int values, long keys (one ack per batch)."""
        return {
            "edge_id": self.edge_id,
            "stream": self.stream,
            "generation": self.generation,
            "acked_offset": self.acked_offset,
            "status": self.status.value,
        }

    @classmethod
    def from_dict(cls, data: object) -> Ack:
        """Parse the peer's ack; raises ``MalformedReply`` naming the bad field."""
        if not isinstance(data, Mapping):
            raise MalformedReply("body", "an ack must be a map")
        for name in ("edge_id", "stream", "generation"):
            _reply_field(data, name, is_safe_name(data.get(name)), "must be a safe name")
        acked = data.get("acked_offset")
        _reply_field(
            data,
            "acked_offset",
            _is_int(acked) and -1 <= acked <= MAX_OFFSET,  # type: ignore[operator]
            "must be an int >= -1",
        )
        statuses = {s.value: s for s in AckStatus}
        status = data.get("status")
        _reply_field(
            data,
            "status",
            isinstance(status, str) and status in statuses,
            f"must be one of {sorted(statuses)}",
        )
        return cls(data["edge_id"], data["stream"], data["generation"], acked, statuses[status])


@dataclass(frozen=True, slots=True)
class Refusal:
    """The broker wrote nothing; the edge must resend from ``expected_offset``."""

    code: RefusalCode
    expected_offset: int
    message: str = ""

    def __post_init__(self) -> None:
        if type(self.code) is not RefusalCode:
            raise LocalProtocolError(f"code {self.code!r} must be a RefusalCode")
        if not _is_offset(self.expected_offset):
            raise LocalProtocolError(f"expected_offset {self.expected_offset!r} is not an offset")
        if type(self.message) is not str:
            raise LocalProtocolError("message must be a str")

    def to_dict(self) -> dict[str, Any]:
        """The JSON/CBOR form of the refusal."""
        return {
            "code": self.code.value,
            "expected_offset": self.expected_offset,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: object) -> Refusal:
        """Parse the peer's refusal; raises ``MalformedReply`` naming the bad field."""
        if not isinstance(data, Mapping):
            raise MalformedReply("body", "a refusal must be a map")
        codes = {c.value: c for c in RefusalCode}
        code = data.get("code")
        _reply_field(
            data, "code", isinstance(code, str) and code in codes, f"must be one of {sorted(codes)}"
        )
        _reply_field(
            data, "expected_offset", _is_offset(data.get("expected_offset")), "must be an offset"
        )
        message = data.get("message", "")
        _reply_field(data, "message", type(message) is str, "must be a string")
        return cls(codes[code], data["expected_offset"], message)
