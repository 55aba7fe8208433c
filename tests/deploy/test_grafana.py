"""deploy/grafana: every metric the dashboard and the alert rules query exists on a
running agent and broker.

The dashboard JSON and the alert rules are loaded, the metric names are taken from every
panel's and rule's PromQL (label matchers, groupings and ranges removed first, so a label
is never mistaken for a metric), and each must have a sample on the /metrics of a live
pipeline (Mosquitto, broker with a mirror, agent, devices, a consumer group). The scrape
config must name both services' /metrics and load the rules.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import REPO, Server, find_binary, wait_for
from tests.opsui.pipeline import pipeline

GRAFANA = REPO / "deploy" / "grafana"
HERE = Path(__file__).resolve().parent
#: counters by label that an agent without zero-valued series exports at the first increment
DECLARED_ONLY = {"edge_ingest_dropped_total", "edge_task_restarts_total"}
METRIC = re.compile(r"\b(?:edge|broker)_[a-z0-9_]+\b")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    return set(METRIC.findall(expr))


def queries(dashboard: dict[str, Any]) -> list[str]:
    out = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    out += [v["query"]["query"] for v in dashboard["templating"]["list"]
            if isinstance(v.get("query"), dict)]
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((GRAFANA / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_metric_names_are_found_in_promql() -> None:
    assert metric_names('sum by (stream, edge_x) (rate(edge_a_total{job=~"broker_y"}[5m]))'
                        ' / on (instance) broker_b') == {"edge_a_total", "broker_b"}
    assert metric_names("label_values(edge_healthy{job=~\"$j\"}, instance)") == {"edge_healthy"}


def samples(url: str, headers: dict[str, str] | None = None) -> set[str]:
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=5).text
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_every_queried_metric_exists_on_a_running_agent_and_broker(
        tmp_path: Path, mosquitto: Server) -> None:
    dashboard = json.loads((GRAFANA / "edgestream.json").read_text())
    exprs = queries(dashboard) + [rule["expr"] for rule in alert_rules()]
    wanted = set().union(*map(metric_names, exprs))
    assert len(wanted) >= 30 and any(n.startswith("edge_") for n in wanted)
    assert "broker_ingest_positions_limit" in wanted
    mirror = (f'[mirrors.archive]\ntopic = "telemetry"\ntarget = "sql"\n'
              f'path = "{tmp_path / "archive.db"}"\n')
    # payloads over max_payload_bytes make dead letters, so their counter has samples
    with pipeline(tmp_path / "run", mosquitto.port, devices=20, duration=30,
                  cloud_extra=mirror,
                  sim_args=("--oversized-ratio", "0.02", "--oversized-bytes", "300000")) as run:
        auth = {"Authorization": f"Bearer {run.read_token}"}
        _consume_and_commit(run.cloud_url, auth)
        deadline = time.monotonic() + 20
        while True:  # the scrape-time series appear within a few agent samples
            missing = wanted - samples(run.cloud_url, auth) - samples(run.agent_url)
            if missing <= DECLARED_ONLY or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert missing <= DECLARED_ONLY, f"queried but not exported: {sorted(missing)}"


def _consume_and_commit(url: str, auth: dict[str, str]) -> None:
    """A fetch and a group commit: the fetch and consumer-lag series appear."""
    def fetched() -> bool:
        resp = httpx.get(f"{url}/v1/topics/telemetry/partitions/0/records",
                         params={"offset": 0}, timeout=5,
                         headers={**auth, "Accept": "application/json"})
        return resp.status_code == 200 and bool(resp.json().get("records"))

    wait_for(fetched, timeout=20, interval=0.3)
    resp = httpx.post(f"{url}/v1/groups/grafana-test/commit", headers=auth, timeout=5,
                      json={"offsets": [{"topic": "telemetry", "partition": 0, "offset": 0}]})
    assert resp.status_code == 200, resp.text


def test_the_scrape_config_names_both_services() -> None:
    text = (GRAFANA / "prometheus.yml").read_text()
    assert text.count("metrics_path: /metrics") == 2
    for job in ("edgestream-broker", "edgestream-edge"):
        assert f"job_name: {job}" in text
    config = yaml.safe_load(text)
    assert config["rule_files"] == ["alerts.yml"]
    assert {j["job_name"] for j in config["scrape_configs"]} == {
        "edgestream-broker", "edgestream-edge"}


def test_every_alert_rule_is_complete() -> None:
    """Prometheus' rule format: a unique name, an expression, a severity Alertmanager can
    route on and a summary; a job named in a rule is one the scrape config has."""
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(rules) >= 10 and len(set(names)) == len(names)
    jobs = {j["job_name"] for j in yaml.safe_load(
        (GRAFANA / "prometheus.yml").read_text())["scrape_configs"]}
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["expr"].strip() and rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"].strip()
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule["alert"]
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, (rule["alert"], job)


@pytest.mark.parametrize("panel", json.loads(
    (GRAFANA / "edgestream.json").read_text())["panels"], ids=lambda p: p["title"])
def test_every_panel_is_complete(panel: dict[str, Any]) -> None:
    assert panel["gridPos"]["w"] > 0 and panel["title"]
    if panel["type"] != "row":
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])


def test_promtool_accepts_the_rules_and_they_fire_as_documented() -> None:
    """Prometheus' own checker on the rules (PromQL, templates), then its unit tests
    (``alerts_test.yml``): each tested alert fires on synthetic series that should fire
    it, only after its ``for``, and stays quiet on series that should not."""
    promtool = find_binary("promtool")
    check = subprocess.run([promtool, "check", "rules", str(GRAFANA / "alerts.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(alert_rules())} rules found" in check.stdout
    unit = subprocess.run([promtool, "test", "rules", str(HERE / "alerts_test.yml")],
                          capture_output=True, text=True, timeout=60)
    assert unit.returncode == 0, unit.stdout + unit.stderr
