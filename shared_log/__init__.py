"""shared_log: a segmented, checksummed, append-only log store.

Used by the edge agent (the local buffer) and the cloud broker (one log per
topic-partition). Knows nothing of MQTT or HTTP. See docs/log-format.md.
"""

from ._columns import (
    BatchFetch,
    ColumnFetch,
    RecordColumns,
    StoredBatch,
    fetch_batches,
    fetch_columns,
)
from ._commit import SharedFlusher
from ._config import CommitMode, CommitPolicy, FullPolicy, LogConfig
from ._errors import (
    CorruptBatch,
    DiskFull,
    InvalidRecord,
    LogClosed,
    LogError,
    LogFull,
    OffsetOutOfRange,
)
from ._files import atomic_write, read_checkpoint, write_checkpoint
from ._helpers import append_durable, open_log, reopen_empty_at
from ._log import FetchResult, Log, LogStats
from ._records import (
    HEADER_HEAD,
    HEADER_SIZE,
    RECORD_HEAD,
    BatchInfo,
    Record,
    StoredRecord,
    decode_records,
    encode_framed,
    parse_header,
    verify_batch,
)
from ._segment import CorruptRange

__all__ = [
    "HEADER_HEAD",
    "HEADER_SIZE",
    "RECORD_HEAD",
    "BatchFetch",
    "BatchInfo",
    "ColumnFetch",
    "CommitMode",
    "CommitPolicy",
    "CorruptBatch",
    "CorruptRange",
    "DiskFull",
    "FetchResult",
    "FullPolicy",
    "InvalidRecord",
    "Log",
    "LogClosed",
    "LogConfig",
    "LogError",
    "LogFull",
    "LogStats",
    "OffsetOutOfRange",
    "Record",
    "RecordColumns",
    "SharedFlusher",
    "StoredBatch",
    "StoredRecord",
    "append_durable",
    "atomic_write",
    "decode_records",
    "encode_framed",
    "fetch_batches",
    "fetch_columns",
    "open_log",
    "parse_header",
    "read_checkpoint",
    "reopen_empty_at",
    "verify_batch",
    "write_checkpoint",
]
