"""``edge-agent top``: one frame of a real agent's status (figures asserted), the CLI's
exit codes, garbled and hostile status answers (a clear one-line error, never a
traceback), and the zero-valued counters the agent exports from the start."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from edge_agent_testing import Publisher, agent_server, http_get, stream_status, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from edge_agent import top
from edge_agent.payload import REASONS
from edge_agent.top_doc import MAX_BODY_BYTES, StatusError, parse
from tests.helpers import Server, wait_for


def top_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", "top", *args],
                          capture_output=True, text=True, timeout=60)


def frame(url: str) -> tuple[int, str]:
    out = io.StringIO()  # an 80-column terminal, as over SSH
    rc = top.once(url, Console(file=out, width=80, color_system=None))
    return rc, out.getvalue()


def test_top_shows_a_real_agents_figures(tmp_path: Path, mosquitto: Server) -> None:
    cfg, status_port = write_config(tmp_path, mosquitto.port, streams="""
[[streams]]
name = "telemetry"
topics = ["devices/+/telemetry"]
device_key = "topic:devices/{device}/telemetry"
require_sequence = true
""")  # the cloud is down
    cfg.write_text(cfg.read_text().replace("[status]\n", "[status]\nstuck_after_s = 1\n"))
    agent = agent_server(cfg, status_port, tmp_path / "agent.out").start()
    pub = Publisher(mosquitto.port, "d1")
    try:
        # zero-valued from the start, before anything was dropped or dead-lettered
        metrics = http_get(status_port, "/metrics").text
        assert 'edge_ingest_dropped_total{reason="full",stream="telemetry"} 0.0' in metrics
        assert ('edge_ingest_dropped_total{reason="drop_oldest",stream="telemetry"} 0.0'
                in metrics)
        for reason in REASONS:
            assert (f'edge_ingest_dead_lettered_total{{reason="{reason}",stream="telemetry"}}'
                    " 0.0") in metrics, reason
        assert 'edge_sequence_resets_total{cause="epoch",stream="telemetry"} 0.0' in metrics
        for seq in range(30):
            pub.publish(seq)
        pub.client.publish("devices/d1/telemetry", b"{not json", qos=1)
        wait_for(lambda: stream_status(status_port)["received"] >= 31, 20)
        wait_for(lambda: stream_status(status_port)["received_rate"] > 0, 5)
        # stuck after 1 s: the cloud is down and the backlog does not move
        wait_for(lambda: http_get(status_port, "/healthz").status_code == 503, 20)
        st_ = stream_status(status_port)
        assert st_["backlog_history"][-1] == 30
        rc, text = frame(f"http://127.0.0.1:{status_port}")
        assert rc == 1, text
        flow, state = [[c.strip() for c in ln.split("│")[1:-1]] for ln in text.splitlines()
                       if ln.startswith("│telemetry")]
        assert flow[5] == "30"  # backlog records
        assert flow[7].endswith("█")  # the backlog's sparkline: at its peak now
        assert state[3] == "-1"  # nothing acked yet
        assert state[4] == "-"  # no drops
        assert "malformed=1" in state[5]  # dead letters by reason
        assert "unhealthy" in text and "uplink: retrying" in text
        assert "problem: stream telemetry: stuck: 30 records" in text
        assert "mqtt agent-telemetry: connected" in text
        m = http_get(status_port, "/metrics").text
        assert 'edge_ingest_dead_lettered_total{reason="malformed",stream="telemetry"} 1.0' in m
        # the command itself, from the config file
        res = top_cli("--config", str(cfg), "--once")
        assert res.returncode == 1, res.stderr
        assert "telemetry" in res.stdout and "retrying" in res.stdout
    finally:
        pub.close()
        agent.kill()
    res = top_cli("--config", str(cfg), "--once")
    assert res.returncode == top.EXIT_UNREACHABLE
    assert "cannot reach the agent" in res.stderr and "Traceback" not in res.stderr


def test_top_view_of_a_document() -> None:
    doc = parse(json.dumps({
        "edge_id": "gw-1", "healthy": True, "time": 1000.0, "started_at": 400.0,
        "problems": [], "mqtt": [{"client_id": "c1", "connected": False,
                                  "last_error": "refused [red]x[/]"}],
        "uplink": {"state": "connected", "url": "https://cloud:8443", "retries": 2,
                   "last_error": ""},
        "dead_letter": {"records": 3, "bytes": 100, "by_stream": {"t": {"bad_value": 3}}},
        "streams": [{"name": "t", "received_rate": 5.5, "ingest_rate": 12.0,
                     "sent_rate": 11.0, "drain_rate": 10.0, "backlog_records": 7,
                     "backlog_bytes": 2048, "backlog_history": [0, 4, 8],
                     "oldest_unsent_age_s": 1.5, "acked_offset": 41,
                     "drops": {"full": 2}}]}).encode())
    hist = top.History()
    hist.add(doc)
    out = io.StringIO()
    Console(file=out, width=250, color_system=None).print(top.view(doc, hist))
    text = out.getvalue()
    for want in ("gw-1", "healthy", "up 10.0m", "5.5", "2.0KiB", "▁▅█", "1.5s", "41",
                 "full=2", "bad_value=3", "uplink: connected", "retries 2",
                 "refused [red]x[/]"):  # shown as text, not taken as markup
        assert want in text, want


class _Answer(BaseHTTPRequestHandler):
    body: bytes = b""
    code: int = 200

    def do_GET(self) -> None:
        self.send_response(self.code)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_agent() -> Iterator[tuple[str, type[_Answer]]]:
    handler = type("H", (_Answer,), {})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("code,body,says", [
    (200, b"<html>hello</html>", "not JSON"),
    (200, b"[1, 2]", "expected an object"),
    (200, b'{"edge_id": "x"}', "has no streams"),
    (200, b'{"streams": [{"name": 5}]}', "streams[0].name: expected a string"),
    (200, b'{"streams": [{"name": "t", "backlog_records": "many"}]}',
     "streams[0].backlog_records: expected an integer"),
    (200, b'{"streams": [{"name": "t", "ingest_rate": NaN}]}', "expected a number"),
    (200, b'{"streams": [], "uplink": {"state": ["x"]}}', "uplink.state"),
    (200, b"[" * 100_000, "not JSON"),
    (200, b" " * (MAX_BODY_BYTES + 10), "larger than"),
    (500, b"oops", "HTTP 500"),
])
def test_garbled_answers_are_one_clear_line(fake_agent: tuple[str, type[_Answer]],
                                            code: int, body: bytes, says: str) -> None:
    url, handler = fake_agent
    handler.code, handler.body = code, body
    res = top_cli("--url", url, "--once")
    assert res.returncode == top.EXIT_UNREACHABLE, res.stdout + res.stderr
    assert says in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_usage_errors_exit_2() -> None:
    res = top_cli("--once")
    assert res.returncode == 2 and "--config" in res.stderr
    res = top_cli("--url", "http://127.0.0.1:1", "--interval", "0")
    assert res.returncode == 2 and "Traceback" not in res.stderr


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=30)
_keys = st.sampled_from(["name", "backlog_records", "backlog_history", "drops", "uplink",
                         "acked_offset", "oldest_unsent_age_s", "received_rate", "state"])
_stream = st.dictionaries(_keys, _json, max_size=6).map(lambda d: {"name": "s", **d})
_doc = st.fixed_dictionaries({"streams": st.lists(_stream | _json, max_size=3)},
                             optional={"uplink": st.dictionaries(_keys, _json, max_size=3),
                                       "mqtt": _json, "problems": _json, "healthy": _json,
                                       "dead_letter": _json, "time": _json,
                                       "started_at": _json, "edge_id": _json})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_doc | _json)
def test_any_answer_renders_or_is_refused(doc: Any) -> None:
    try:
        body = json.dumps(doc).encode()
    except ValueError:
        return
    try:
        checked = parse(body)
    except StatusError as exc:
        assert str(exc).startswith("not an edge-agent status document")
        return
    hist = top.History()
    hist.add(checked)
    Console(file=io.StringIO(), width=120, color_system=None).print(top.view(checked, hist))
