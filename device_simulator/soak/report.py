"""Prints a soak result as a few tables (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from .figures import MB


def _verdict_table(result: dict[str, Any]) -> Table:
    t = Table(title="delivery (per (device, boot) and across boots)")
    t.add_column("view / topic")
    for c in ("expected", "delivered", "lost", "duplicated", "reordered", "unexpected"):
        t.add_column(c, justify="right")
    for view, by_topic in result.get("views", {}).items():
        for topic, rep in by_topic.items():
            x = rep["totals"]
            t.add_row(f"{view} / {topic}", *(str(x[k]) for k in (
                "expected", "delivered", "missing", "duplicates", "out_of_order", "unexpected")))
    return t


def _resource_table(result: dict[str, Any]) -> Table:
    t = Table(title="resources after warm-up (growth = fitted slope x span; RSS judged "
                    "through each minute's low water, every sample beside it)")
    for c in ("role", "incarnations", "RSS last (MB)", "RSS growth (MB)",
              "RSS growth, every sample (MB)", "fds last",
              "fd growth", "threads last", "CPU mean %"):
        t.add_column(c, justify="right")
    for role, fig in result.get("resources", {}).items():
        rss, fds, thr = fig["rss"], fig["fds"], fig["threads"]
        if rss is None:
            t.add_row(role, "-", "-", "-", "-", "-", "-", "-", "-")
            continue
        t.add_row(role, str(rss["incarnations"]), f"{rss['last'] / MB:.1f}",
                  f"{rss['growth'] / MB:+.2f}",
                  f"{rss.get('raw_growth', rss['growth']) / MB:+.2f}", str(fds["last"]),
                  f"{fds['growth']:+.1f}",
                  str(thr["last"]), f"{fig['cpu_mean']:.0f}" if fig["cpu_mean"] else "-")
    return t


def print_report(result: dict[str, Any], opts: Any) -> None:
    c = Console()
    c.print(f"[bold]soak[/bold] seed {opts.seed}: {opts.devices} devices, {opts.rate:g} "
            f"readings/s for {opts.seconds:g} s (published in "
            f"{result.get('published_s', '-')} s, drained in {result.get('drain_s', '-')} s)")
    sim = result.get("sim") or {}
    if sim:
        c.print(f"device-sim: {sim['readings']} readings at {sim['readings_per_s']:.0f}/s "
                f"(target {sim['target_rate']:g}/s), {sim['acked']} acknowledged by Mosquitto, "
                f"{sim['behind']} behind schedule")
    f = result.get("faults", {})
    c.print(f"faults done: {f.get('done', {})}  skipped: {f.get('skipped', {})}")
    sent = result.get("sent", {})
    c.print(f"devices: sent {sent.get('sent', '-')}, reboots {sent.get('reboots', '-')}, "
            f"malformed {sent.get('malformed', '-')}, duplicates {sent.get('duplicates', '-')}, "
            f"dropped by devices {sent.get('dropped', '-')}, unconfirmed "
            f"{sent.get('unconfirmed', '-')}")
    c.print(_verdict_table(result))
    rec = result.get("reconcile", {})
    c.print(f"dead letters: {rec.get('dead_letters', '-')} {rec.get('by_reason', {})}; "
            f"malformed sent {rec.get('malformed_sent', '-')}, dead-lettered (distinct) "
            f"{rec.get('malformed_dead_lettered', '-')}; reconcile ok: {rec.get('ok', '-')}")
    lag = result.get("alarm_lag", {})
    c.print(f"alarms behind telemetry at the edge: max {lag.get('max_s', 0):.2f} s "
            f"(bound {lag.get('bound_s', '-')} s, {lag.get('samples', 0)} samples)")
    if "net_max_s" in lag:
        c.print(f"  net of uplink cuts and the alarm partitions' leader elections: max "
                f"{lag['net_max_s']:.2f} s (judged); longest alarm append wait "
                f"{lag['alarm_append_wait_max_s']:.2f} s")
    for topic, lat in (result.get("latency_ms") or {}).items():
        if lat:
            c.print(f"latency to the group, {topic}: p50 {lat['p50']:.0f} ms, p99 "
                    f"{lat['p99']:.0f} ms, max {lat['max']:.0f} ms")
    c.print(f"edge peaks: {result.get('edge_peaks', {})}; member repeats after kills: "
            f"{result.get('member_repeats', '-')}")
    c.print(_resource_table(result))
    net = (result.get("resources", {}).get("broker") or {}).get("fds_net")
    if net:
        c.print(f"broker fds net of its segment files: last {net['last']}, growth "
                f"{net['growth']:+.1f} (judged instead of the raw fds)")
    for p in result.get("problems_skipped", []):
        c.print(f"[yellow]skipped: {p}[/yellow]")
    if result["ok"]:
        c.print("[bold green]OK: nothing lost, duplicated or reordered; drops reconcile; "
                "resources within bounds[/bold green]")
    else:
        c.print("[bold red]FAILED:[/bold red]")
        for p in result["problems"]:
            c.print(f"  - {p}")
