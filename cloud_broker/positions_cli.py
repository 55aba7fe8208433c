"""``cloud-broker positions list|forget``: the ingest positions a stopped broker holds.

Strategy: a position (edge, stream, generation) is kept for good once acknowledged, so
that a resend is never taken for new records (G3); ``max_positions`` and
``max_positions_per_edge`` bound how many. A fleet whose gateways are re-imaged or
retired leaves positions nothing will send again; ``forget`` is how the operator gives
their room back. It runs offline: it takes the data directory's lock (refused while a
broker serves it), opens the broker exactly as ``serve`` would (``Broker``: every topic,
the ingest state recovered from its checkpoint and the partitions' tails), drops the
matching positions with their marks, and writes the ingest checkpoint at the partitions'
current ends, so the next start does not rebuild them from records it has already
replayed. Nothing in the partitions changes.

What forgetting costs is stated, not hidden: a forgotten position that does send again
is taken as new, and the records of it the broker already holds are stored again. So
``forget`` names positions exactly (an edge, optionally one stream and one generation)
and asks for ``--yes``; without it, it only lists what it would drop. Cluster mode keeps
positions in the JetStream streams' own headers: not supported there (exit 2).

Exit codes: 0 done (or the list); 1 nothing matched; 2 configuration or usage error
(including a data directory in use).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from uplink import is_safe_name

from .config import BrokerConfig, ConfigError, load_config


def _open(cfg: BrokerConfig):  # type: ignore[no-untyped-def]
    """The broker as ``serve`` opens it (not started: no listener, no background task)."""
    from .broker import Broker  # the HTTP-free core; imported late (CLI start-up time)

    if cfg.storage is not None and cfg.storage.backend == "jetstream":
        raise ConfigError("storage", "cluster mode keeps ingest positions in the JetStream "
                                     "streams: positions list/forget work on a local store only")
    return Broker(cfg)  # takes the data directory's lock, released by stop()


def _print(rows: list[tuple[tuple[str, str, str], int]]) -> None:
    print(f"{'edge':<32} {'stream':<20} {'generation':<34} acked offset")
    for (edge, stream, gen), off in rows:
        print(f"{edge:<32} {stream:<20} {gen:<34} {off}")


def _check_names(args: argparse.Namespace) -> None:
    for name in ("edge", "stream", "generation"):
        value = getattr(args, name)
        if value is not None and not is_safe_name(value):
            raise ConfigError(f"--{name}", f"{value[:60]!r} is not a name the uplink accepts")


async def _run(args: argparse.Namespace) -> int:
    _check_names(args)
    cfg = load_config(args.config)
    broker = _open(cfg)
    try:
        ingest = broker.ingestor
        rows = sorted(ingest.positions(args.edge, args.stream, args.generation))
        held, edge_max = ingest.position_counts()
        if args.action == "list":
            _print(rows)
            print(f"{len(rows)} shown; {held} held of max_positions {ingest.max_positions}; "
                  f"the most of one edge {edge_max} of max_positions_per_edge "
                  f"{ingest.max_positions_per_edge}", file=sys.stderr)
            return 0
        if not rows:
            print("no position matches", file=sys.stderr)
            return 1
        if not args.yes:
            _print(rows)
            print(f"{len(rows)} positions would be forgotten: a forgotten position that "
                  "sends again is taken as new, and what the broker holds of it is stored "
                  "again. Run again with --yes to forget them.", file=sys.stderr)
            return 1
        gone = ingest.forget(args.edge, args.stream, args.generation)
        _print(sorted(gone))
        print(f"forgot {len(gone)} positions; {held - len(gone)} held now", file=sys.stderr)
        return 0
    finally:
        await broker.stop()  # writes the ingest checkpoint at the partitions' ends


def cmd_positions(args: argparse.Namespace) -> int:
    if args.action == "forget" and args.edge is None:
        raise ConfigError("--edge", "forget needs --edge (and optionally --stream and "
                                    "--generation)")
    return asyncio.run(_run(args))


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("positions", help="list or forget ingest positions (broker stopped)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("list", "forget"))
    p.add_argument("--config", required=True, help="path to cloud.toml")
    p.add_argument("--edge", help="the edge id (required by forget)")
    p.add_argument("--stream", help="only this stream of the edge")
    p.add_argument("--generation", help="only this generation")
    p.add_argument("--yes", action="store_true",
                   help="forget: really drop them (without it, only show what would go)")
    p.set_defaults(func=cmd_positions)


__all__ = ["add_parser"]
