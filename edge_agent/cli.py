"""``edge-agent``: run the agent, show its status.

Strategy: argparse subcommands, each a small function (``--help`` shows ``USAGE``, not
this docstring). Configuration problems (the file,
a key, an environment override, a port that cannot be bound, a data directory in use)
print the key that is wrong and exit 2 instead of a traceback. Logs are plain text, or
one JSON object per line with ``status.json_logs = true``.

    edge-agent run --config edge.toml
    edge-agent status --config edge.toml [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys

from supervision import FullCollections, limit_malloc, start_heap_trimmer, start_memory_log

from .config import ConfigError, EdgeConfig, load_config

USAGE = """Run the edge agent on a gateway and watch it.

  edge-agent check-config --config edge.toml   validate the configuration
  edge-agent run --config edge.toml            run the agent
  edge-agent status --config edge.toml         backlog, offsets, drops per stream
  edge-agent top --config edge.toml            the same, live (or --url http://host:9100)

Exit codes: 0 ok; 1 unhealthy; 2 configuration or usage error; 3 the agent cannot be
reached or did not answer a status document. See docs/edge-agent.md."""

_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS:
                out[k] = v if isinstance(v, str | int | float | bool | None) else repr(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(json_logs: bool, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if level > logging.DEBUG:  # one line per uplink request is noise
        logging.getLogger("httpx").setLevel(logging.WARNING)


def tune_gc() -> None:
    """Fewer cyclic-GC passes: ingest allocates several short-lived, acyclic objects per
    reading. Freeze what start-up allocated (full collections stop rescanning it) and
    collect the young generation less often; the broker does the same (cloud_broker/cli.py,
    measured in bench/uplink_drain.py)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 10)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _serve(cfg: EdgeConfig) -> int:
    from .agent import Agent, StartupError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agent = Agent(cfg)
    try:
        await agent.start()
    except StartupError as exc:
        await agent.stop()
        print(f"edge-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    tune_gc()
    collections = FullCollections(loop)
    logging.getLogger("edge_agent").info(
        "edge agent %s running: %d streams, status on %s:%d", cfg.edge_id, len(cfg.streams),
        *(agent.status_address or ("?", 0)))
    try:
        await stop.wait()
    finally:
        logging.getLogger("edge_agent").info("stopping")
        collections.cancel()
        await agent.stop()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    # httpx imports its own command-line client (rich, pygments, click: ~10 MB of RSS) at
    # import time when those are installed; the agent never uses it, so keep it out.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    limit_malloc()
    start_heap_trimmer()
    start_memory_log("agent")
    cfg = load_config(args.config)
    setup_logging(cfg.status.json_logs, logging.DEBUG if args.verbose else logging.INFO)
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(_serve(cfg))


def cmd_status(args: argparse.Namespace) -> int:
    from .status_view import get_status, render

    cfg = load_config(args.config)
    doc = get_status(cfg)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        render(doc)
    return 0 if doc.get("healthy") else 1


def cmd_top(args: argparse.Namespace) -> int:
    from rich.console import Console

    from . import top
    from .status_view import status_url

    if args.url:
        url = args.url
        if not url.startswith(("http://", "https://")):
            url = f"http://{url}"
    elif args.config:
        url = status_url(load_config(args.config))
    else:
        print("edge-agent top: give --config edge.toml or --url http://host:port",
              file=sys.stderr)
        return 2
    console = Console()
    if args.once:
        return top.once(url, console, timeout=args.timeout)
    return top.live(url, console, interval=args.interval, timeout=args.timeout)


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0.1 <= v <= 3600:
        raise argparse.ArgumentTypeError(f"must be in 0.1..3600 seconds, got {text}")
    return v


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    print(f"{args.config}: ok ({len(cfg.streams)} streams, data_dir {cfg.data_dir})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent")
    run.add_argument("--config", required=True, help="path to edge.toml")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=cmd_run)
    st = sub.add_parser("status", help="backlog, offsets, drops and uplink state per stream")
    st.add_argument("--config", required=True, help="path to edge.toml")
    st.add_argument("--json", action="store_true", help="print the status document as JSON")
    st.set_defaults(func=cmd_status)
    top = sub.add_parser("top", help="live view of a running agent (rates, backlog, uplink)")
    top.add_argument("--config", help="path to edge.toml (its status.listen is asked)")
    top.add_argument("--url", help="status address instead, e.g. http://127.0.0.1:9100")
    top.add_argument("--interval", type=_positive, default=1.0,
                     help="seconds between frames (default 1)")
    top.add_argument("--timeout", type=_positive, default=2.0,
                     help="seconds to wait for the agent's answer (default 2)")
    top.add_argument("--once", action="store_true",
                     help="print one frame and exit (0 healthy, 1 unhealthy, 3 unreachable)")
    top.set_defaults(func=cmd_top)
    chk = sub.add_parser("check-config", help="validate edge.toml and exit")
    chk.add_argument("--config", required=True, help="path to edge.toml")
    chk.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"edge-agent: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
