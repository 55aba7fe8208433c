"""Content-Encoding of uplink bodies: gzip and zstd, decompressed within a bound.

Strategy: peer bytes are untrusted, so decompression never produces more than ``limit``
bytes (a zip bomb becomes ``BodyTooLarge``) and costs time linear in the body: gzip is
fed to zlib in chunks (after each member zlib copies what follows as ``unused_data``, so
feeding the whole body made many small members quadratic) and a body may hold at most
``MAX_GZIP_MEMBERS`` members; a zstd frame's declared size is checked before the one-shot
decompress trusts it. Compression is deterministic (gzip ``mtime`` 0), so a batch's bytes
are a function of the batch.
"""

from __future__ import annotations

import threading
import zlib

import zstandard

from ._errors import BodyTooLarge, MalformedBatch, UnsupportedEncoding

#: gzip members one body may hold: edges send one; thousands of empty ones were a
#: way to make decompression slow.
MAX_GZIP_MEMBERS = 64
_GZIP_CHUNK = 64 * 1024

# compression argument -> Content-Encoding token (RFC 9110 / RFC 8878 names)
_TOKENS: dict[str, str] = {"none": "identity", "gzip": "gzip", "zstd": "zstd"}
_DEFAULT_LEVELS: dict[str, int] = {"gzip": 6, "zstd": 3}
# One ZstdCompressor per thread and level: a new one allocates and clears its context
# (about 1 MB at level 3) on every body, half the cost of compressing an uplink batch
# (~9 of ~17 us for 6 KB). A compressor serves one call at a time, hence per thread; a
# one-shot ``compress`` starts a fresh frame, so the bytes do not depend on earlier ones.
_zstd = threading.local()


def _zstd_compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_zstd, "by_level", None)
    if cache is None:
        cache = _zstd.by_level = {}
    compressor = cache.get(level)
    if compressor is None:
        if len(cache) >= 8:  # levels come from config: a few; bounded all the same
            cache.clear()
        compressor = cache[level] = zstandard.ZstdCompressor(level=level)
    return compressor


def compress(body: bytes, compression: str, level: int | None) -> bytes:
    if compression == "none":
        return body
    chosen = _DEFAULT_LEVELS[compression] if level is None else level
    if compression == "gzip":
        # mtime=0 keeps the bytes a pure function of the batch.
        compressor = zlib.compressobj(chosen, zlib.DEFLATED, 31)
        return compressor.compress(body) + compressor.flush()
    return _zstd_compressor(chosen).compress(body)


def _gunzip(body: bytes, limit: int) -> bytes:
    # Several gzip members back to back are one valid gzip stream. The input goes in by
    # chunks so what zlib copies as ``unused_data`` after each member is at most a chunk:
    # linear in the body, where feeding all of it copied the rest once per member.
    parts: list[bytes] = []
    total = 0
    members = 0
    view = memoryview(body)
    pos = 0
    inflater = zlib.decompressobj(31)
    fed = False  # the current member has input
    data: bytes | memoryview = b""
    while True:
        if not data:
            if pos >= len(body):
                break
            data = view[pos:pos + _GZIP_CHUNK]
            pos += len(data)
        fed = True
        try:
            part = inflater.decompress(data, limit - total + 1)
        except zlib.error as exc:
            raise MalformedBatch("body", f"not valid gzip: {exc}") from exc
        total += len(part)
        if total > limit:
            raise BodyTooLarge("body", f"decompresses to more than {limit} bytes")
        parts.append(part)
        if inflater.eof:
            members += 1
            if members > MAX_GZIP_MEMBERS and (inflater.unused_data or pos < len(body)):
                raise MalformedBatch("body", f"more than {MAX_GZIP_MEMBERS} gzip members")
            data = inflater.unused_data
            inflater = zlib.decompressobj(31)
            fed = False
        else:
            data = inflater.unconsumed_tail
    if fed or not members:
        raise MalformedBatch("body", "gzip stream is truncated")
    return b"".join(parts)


def _unzstd(body: bytes, limit: int) -> bytes:
    dctx = zstandard.ZstdDecompressor()
    try:
        declared = zstandard.frame_content_size(body)
    except zstandard.ZstdError as exc:
        raise MalformedBatch("body", f"not valid zstd: {exc}") from exc
    # One-shot decompress trusts a declared size over max_output_size, so a
    # declared size is checked first; without one, max_output_size bounds it.
    if declared > limit:
        raise BodyTooLarge("body", f"declares {declared} bytes, over the limit of {limit}")
    try:
        return dctx.decompress(body, max_output_size=limit + 1, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        if declared < 0 and _zstd_exceeds(dctx, body, limit):
            raise BodyTooLarge("body", f"decompresses to more than {limit} bytes") from exc
        raise MalformedBatch("body", f"not valid zstd: {exc}") from exc


def _zstd_exceeds(dctx: zstandard.ZstdDecompressor, body: bytes, limit: int) -> bool:
    # Only on the error path: tell "too big" from "truncated" by reading at
    # most limit + 1 bytes through the (bounded) streaming reader.
    total = 0
    try:
        with dctx.stream_reader(body) as reader:
            while total <= limit:
                chunk = reader.read(min(1 << 20, limit + 1 - total))
                if not chunk:
                    return False
                total += len(chunk)
    except zstandard.ZstdError:
        return False
    return True


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    token = (content_encoding or "identity").strip().lower()
    if token == "identity":
        if len(body) > limit:
            raise BodyTooLarge("body", f"{len(body)} bytes, over the limit of {limit}")
        return body
    if token == "gzip":
        return _gunzip(body, limit)
    if token == "zstd":
        return _unzstd(body, limit)
    raise UnsupportedEncoding(
        "content_encoding", f"{content_encoding!r} is not one of identity, gzip, zstd"
    )
