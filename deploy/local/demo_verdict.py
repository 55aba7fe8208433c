"""The demo's verdict: the verifier run on each cloud topic, and the result table."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from demo_configs import READ_TOKEN
from demo_procs import BIN, CHILD_ENV
from demo_watch import LiveConsumer
from rich.table import Table


def verify(cloud_port: int, topic: str, kind: str, manifest: Path) -> dict[str, Any]:
    res = subprocess.run(
        [str(BIN / "device-sim"), "verify", "--from", f"http://127.0.0.1:{cloud_port}",
         "--topic", topic, "--kind", kind, "--manifest", str(manifest), "--token", READ_TOKEN,
         "--settle", "20", "--json"], capture_output=True, text=True, timeout=300,
        env=CHILD_ENV)
    if res.returncode not in (0, 1):
        raise RuntimeError(f"verify {topic} failed ({res.returncode}): {res.stderr[-2000:]}")
    report = json.loads(res.stdout)
    report["exit_code"] = res.returncode
    return report


def report_table(reports: dict[str, dict[str, Any]], sent: int, elapsed: float,
                 drain: tuple[str, float | None], peak_backlog: int, mqtt: str,
                 consumer: LiveConsumer) -> Table:
    table = Table(title=f"demo result (MQTT: {mqtt})", show_header=True)
    table.add_column("")
    for topic in reports:
        table.add_column(topic, justify="right")
    rows = [("expected readings", "expected"), ("delivered", "delivered"),
            ("lost", "missing"), ("duplicated", "duplicates"), ("reordered", "out_of_order"),
            ("sent malformed on purpose", "malformed_received")]
    for label, key in rows:
        table.add_row(label, *(str(r["totals"].get(key, 0)) for r in reports.values()))
    for q in (0.5, 0.99):
        table.add_row(f"device → consumer p{q * 100:.0f} (ms)", *(
            f"{v:.1f}" if (v := consumer.quantile(t, q)) is not None else "-"
            for t in reports))
    table.add_section()
    table.add_row("readings published", str(sent), *([""] * (len(reports) - 1)))
    table.add_row("throughput (readings/s)", f"{sent / elapsed:,.0f}" if elapsed else "-",
                  *([""] * (len(reports) - 1)))
    table.add_row("peak edge backlog", str(peak_backlog), *([""] * (len(reports) - 1)))
    table.add_row(drain[0], "-" if drain[1] is None else f"{drain[1]:.1f}",
                  *([""] * (len(reports) - 1)))
    return table


