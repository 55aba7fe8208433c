"""The ingest endpoint: a thin HTTP adapter around ``uplink`` and ``Ingestor``.

Strategy: check what is cheap first (auth and the ingest permission, topic name, media
type, size) so a token that may not ingest never gets a body read or decoded; decode with
the shared codec off the event loop (``body_decode``) within the limits of the config
(``max_body_bytes``, ``max_decompressed_bytes``, ``max_records_per_request``); check the
edge-id binding of the token on the decoded batch; let the Ingestor decide and write, and
answer with the codec's ack or refusal. Every way a request can be wrong maps to one
status with a JSON body naming the problem: 401 no/unknown token, 403 a token without the
ingest permission or of another edge, 404 unknown topic, 400 malformed batch (with the
field), 413 body, decompressed body or record count too large, 415 unknown
Content-Type or Content-Encoding, 409 gap (with the expected offset), 503 not durable now
(retry).
"""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from uplink import (
    Ack,
    BodyTooLarge,
    MalformedBatch,
    UnsupportedEncoding,
    decode_batch,
    encode_ack,
    encode_refusal,
    is_safe_name,
)

from ..broker import Broker
from ..config import BrokerConfig
from ..errors import Problem, unavailable
from ..ingest import (
    IngestUnavailable,
    PositionLimit,
    RejectedBatch,
    decode_off_loop,
    small_enough_inline,
)
from ..storage import UnknownTopic
from ..trust import check_ingest
from .errors import endpoint
from .params import CBOR, media_type, principal_of, read_body, wants_json


def decode_limits(config: BrokerConfig) -> tuple[int, int]:
    """(max decompressed bytes, max records) of a request; the defaults are the config's."""
    return (config.max_decompressed_bytes or 2 * config.max_body_bytes,
            config.max_records_per_request)


def _reply(request: Request, status: int, payload: dict, cbor_body: bytes) -> Response:
    if wants_json(request):
        return JSONResponse(payload, status_code=status)
    return Response(cbor_body, status_code=status, media_type=CBOR)


@endpoint(measured=lambda b: (b.metrics.ingest_requests, b.metrics.ingest_latency))
async def ingest(request: Request, broker: Broker) -> Response:
    topic = request.path_params["topic"]
    principal = principal_of(broker, request)
    # Before the body is read: a token that may not ingest costs us no decoding. Which
    # edge it may ingest as is known only after decoding (below).
    if "ingest" not in principal.permissions:
        raise Problem(403, "this token lacks the 'ingest' permission", "authorization")
    if not is_safe_name(topic):
        raise Problem(400, f"topic {topic[:60]!r} is not a safe name", "topic")
    check_ingest(broker, principal, topic)  # scope, mirror target, cap: before the body
    ctype = media_type(request)
    if ctype != CBOR:
        raise Problem(415, f"Content-Type must be {CBOR}, got {ctype[:60]!r}", "content-type")
    body = await read_body(request, broker.config.max_body_bytes)
    if body is None:
        raise Problem(413, f"body larger than {broker.config.max_body_bytes} bytes", "body")
    broker.metrics.ingest_bytes.inc(len(body))
    encoding = request.headers.get("content-encoding")
    max_decompressed, max_records = decode_limits(broker.config)
    inline = small_enough_inline(body, encoding)
    try:
        batch = await decode_off_loop(
            partial(decode_batch, body, encoding, max_decompressed_size=max_decompressed,
                    max_records=max_records), inline)
    except UnsupportedEncoding as exc:
        raise Problem(415, str(exc), exc.field) from exc
    except BodyTooLarge as exc:
        raise Problem(413, str(exc), exc.field) from exc
    except MalformedBatch as exc:
        raise Problem(400, str(exc), exc.field) from exc
    if not principal.may_ingest_as(batch.edge_id):
        raise Problem(403, f"this token may not ingest as edge {batch.edge_id!r}", "edge_id")
    seen = (batch.edge_id, batch.stream, topic, batch.generation)
    count = len(batch.records)
    try:
        broker.ensure_topic_for_ingest(topic)
        # The ingestor lets go of the batch once it is appended; holding it here for the
        # wait on durability would keep every record's objects alive (a catch-up's peak).
        pending = broker.ingestor.ingest(topic, batch)
        del batch, body
        reply = await pending
    except UnknownTopic as exc:
        broker.edges.failed(*seen, f"404 {exc}")
        raise Problem(404, str(exc), "topic") from exc
    except RejectedBatch as exc:
        broker.edges.failed(*seen, f"400 {exc.message}")
        raise Problem(400, exc.message, exc.field) from exc
    except PositionLimit as exc:  # the edge retries; the operator sees why (edges view)
        broker.metrics.ingest_outcomes.labels("position_limit").inc()
        broker.edges.failed(*seen, f"429 {exc}")
        raise Problem(429, str(exc), "generation", headers={"Retry-After": "60"}) from exc
    except IngestUnavailable as exc:
        broker.edges.failed(*seen, f"503 not durable: {exc}")
        raise unavailable(f"not durable now, retry: {exc}") from exc
    if isinstance(reply, Ack):
        broker.metrics.ingest_outcomes.labels(reply.status.value).inc()
        broker.edges.acked(*seen, reply.acked_offset, count)
        return _reply(request, 200, reply.to_dict(), encode_ack(reply))
    broker.metrics.ingest_outcomes.labels(reply.code.value).inc()
    broker.edges.failed(*seen, f"409 {reply.code.value}: resend from "
                        f"{reply.expected_offset}")
    return _reply(request, 409, reply.to_dict(), encode_refusal(reply))


__all__ = ["decode_limits", "ingest"]
