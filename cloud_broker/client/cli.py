"""``cloud-broker consume``: print a topic's records as JSON lines.

Strategy: a thin shell around ``client.Consumer``. One line per record, the JSON record
form of docs/consumers.md plus topic and partition (utf-8 text where it decodes, base64
otherwise; ``encoding`` says which). With ``--group`` it joins the group and commits
automatically; ``--limit`` stops after N records, which makes it scriptable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from tomlconf import ConfigError, parse_url

from ..record_codec import record_json
from ..redact import mask_secrets
from .consumer import Consumer, ConsumerError
from .transport import EXIT_USAGE, BrokerClient, exit_code

#: how long the first contact may take before the command gives up; once it has reached
#: the broker, a consumer rides out restarts (Consumer's own retry_for_s)
CONNECT_FOR_S = 5.0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("consume", help="print records of a topic as JSON lines")
    p.add_argument("--url", required=True, help="broker base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--topic", required=True, action="append",
                   help="topic to read (repeat for several)")
    p.add_argument("--group", help="consumer group (commits offsets, shares partitions)")
    p.add_argument("--from", dest="start", default="earliest",
                   help="where to start without a committed offset: earliest, latest or N")
    p.add_argument("--token", default=os.environ.get("CLOUD_BROKER_TOKEN"),
                   help="bearer token with the read permission (default $CLOUD_BROKER_TOKEN)")
    p.add_argument("--limit", type=int, help="stop after this many records")
    p.add_argument("--encoding", choices=["utf8", "base64"], default="utf8",
                   help="how keys and values are printed (utf8 falls back to base64)")
    p.add_argument("--session-timeout-ms", type=int, default=10_000)
    p.add_argument("--connect-timeout", type=float, default=CONNECT_FOR_S, metavar="S",
                   help="give up when the broker cannot be reached within S seconds at "
                        f"start (default {CONNECT_FOR_S:g}; exit 3)")
    p.set_defaults(func=cmd_consume)


def _start(text: str) -> str | int:
    if text in ("earliest", "latest"):
        return text
    if text.isdigit():
        return int(text)
    raise SystemExit(f"cloud-broker consume: --from must be earliest, latest or N, not {text!r}")


async def probe(args: argparse.Namespace) -> None:
    """Reach the broker once, quickly: a wrong URL, a refused port, a bad token or an
    unknown topic fails here in seconds, with its exit code, not after a minute."""
    client = BrokerClient(args.url, args.token, retry_for_s=args.connect_timeout)
    try:
        for topic in args.topic:
            await client.topic(topic)
    finally:
        await client.close()


async def consume(args: argparse.Namespace) -> int:
    await probe(args)
    consumer = Consumer(args.url, topics=args.topic, group=args.group, token=args.token,
                        start=_start(args.start), session_timeout_ms=args.session_timeout_ms)
    n = 0
    out = sys.stdout
    try:
        if args.limit == 0:
            return 0
        async for r in consumer:
            line = {"topic": r.topic, "partition": r.partition,
                    **record_json(r.offset, r.timestamp, r.key, r.value, r.headers,
                                  args.encoding)}
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            n += 1
            if args.limit is not None and n >= args.limit:
                await consumer.commit()
                break
        out.flush()
    finally:
        await consumer.close()
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        parse_url(args.url, "--url", ("http", "https"))
    except ConfigError as exc:
        print(f"cloud-broker consume: {mask_secrets(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(consume(args))
    except ConsumerError as exc:
        print(f"cloud-broker consume: {mask_secrets(str(exc))}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130
