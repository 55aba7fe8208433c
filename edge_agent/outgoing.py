"""A batch as it goes on the wire: encoded once, resent as the same bytes.

Strategy: a batch in flight used to be kept as records (a Python object for each key,
value and timestamp) for as long as its request lasted, retries and their backoff
included, and was encoded (CBOR, compression) again at every attempt. During a catch-up
the forwarder has ``max_in_flight`` batches of up to ``max_batch_records`` each in
flight: tens of thousands of small objects alive at once, which set the agent's memory
high water (docs/reliability.md). ``Outgoing`` holds only the encoded body and the
batch's position, so the records are freed as soon as it is built, and a retry costs no
encoding. ``decode`` gives the ``Batch`` back for uplinks that want records (the
in-memory one that tests link to an ingestor).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from uplink import Batch, decode_batch, encode_batch


@dataclass(frozen=True, slots=True)
class Outgoing:
    edge_id: str
    stream: str
    generation: str
    base_offset: int
    last_offset: int
    count: int  # records in it (a range may have holes: records lost on the edge)
    body: bytes = field(repr=False)
    encoding: str  # the body's Content-Encoding token

    @classmethod
    def encode(cls, batch: Batch, compression: str) -> Outgoing:
        body, encoding = encode_batch(batch, compression)  # type: ignore[arg-type]
        return cls(batch.edge_id, batch.stream, batch.generation, batch.base_offset,
                   batch.last_offset, len(batch.records), body, encoding)

    def decode(self) -> Batch:
        """The batch again, as the broker decodes it."""
        return decode_batch(self.body, self.encoding,
                            max_decompressed_size=max(len(self.body) * 64, 1 << 20),
                            max_records=max(self.count, 1))
