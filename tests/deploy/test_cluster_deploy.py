"""deploy/cluster: the files of cluster mode mean what they say.

Compose: 3 NATS nodes routed to each other, 2 broker nodes on the JetStream store, one
address (nginx) in front of both that passes a failed request to the other node.
Kubernetes: the brokers as a Deployment with no volume, NATS as a 3-replica StatefulSet
with a volume each. The broker configs load through the broker's own validator and
name every NATS node; the NATS configs are accepted by nats-server itself (``-t``).
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud_broker.config import parse_config as parse_cloud
from edge_agent.config import parse_config as parse_edge
from tests.cluster.natsd import nats_server_binary
from tests.helpers import REPO, free_port, load_demo_module

CLUSTER = REPO / "deploy" / "cluster"


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _k8s() -> dict[tuple[str, str], dict[str, Any]]:
    docs = [d for p in sorted((CLUSTER / "k8s").glob("*.yaml")) for d in _yaml_docs(p)]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _routes(conf: str) -> list[str]:
    return re.findall(r"nats-route://([\w.-]+):6222", conf)


def _check_nats_conf(text: str, tmp_path: Path, name_var: str) -> None:
    conf = tmp_path / "nats.conf"
    conf.write_text(text.replace("/data", str(tmp_path / "js"))
                        .replace("/var/run/nats/", f"{tmp_path}/"))
    res = subprocess.run([str(nats_server_binary()), "-t", "-c", str(conf)],
                         capture_output=True, text=True, timeout=30,
                         env={name_var: "node-a"}, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_compose_has_three_nats_two_brokers_one_address() -> None:
    compose = yaml.safe_load((CLUSTER / "compose.yaml").read_text())
    services = compose["services"]
    nats = sorted(s for s in services if s.startswith("nats-"))
    brokers = sorted(s for s in services if s.startswith("broker-"))
    assert nats == ["nats-1", "nats-2", "nats-3"] and brokers == ["broker-1", "broker-2"]
    assert {services[n]["environment"]["SERVER_NAME"] for n in nats} == set(nats)
    assert all(any(str(v).endswith(":/data") for v in services[n]["volumes"]) for n in nats)
    for b in brokers:
        assert set(services[b]["depends_on"]) == set(nats)
        assert "ports" not in services[b], "brokers are reached through the one address"
    assert services["broker"]["ports"] == ["8080:8080"]
    assert set(_routes((CLUSTER / "nats.conf").read_text())) == set(nats)


def test_the_one_address_balances_both_brokers_and_retries_on_the_other() -> None:
    conf = (CLUSTER / "nginx.conf").read_text()
    upstream = re.search(r"upstream brokers \{(.*?)\}", conf, re.S)
    assert upstream is not None
    assert re.findall(r"server (broker-\d):8080", upstream[1]) == ["broker-1", "broker-2"]
    nxt = re.search(r"proxy_next_upstream ([^;]+);", conf)
    assert nxt is not None and {"error", "timeout", "non_idempotent"} <= set(nxt[1].split())
    timeout = re.search(r"proxy_read_timeout (\d+)s;", conf)
    assert timeout is not None and int(timeout[1]) > 25, "group joins long-poll 25 s"


@pytest.mark.parametrize("text, servers_of", [
    ((CLUSTER / "cloud.toml").read_text(), ["nats-1", "nats-2", "nats-3"]),
    (_k8s()[("ConfigMap", "cloud-broker-cluster")]["data"]["cloud.toml"],
     ["nats-0.nats-headless", "nats-1.nats-headless", "nats-2.nats-headless"]),
], ids=["compose", "k8s"])
def test_broker_configs_use_the_jetstream_store_on_every_node(text: str,
                                                              servers_of: list[str]) -> None:
    raw = tomllib.loads(text)
    cfg = parse_cloud(raw, CLUSTER)
    assert "telemetry" in cfg.topics
    assert raw["storage"]["backend"] == "jetstream"
    servers = raw["storage"]["jetstream"]["servers"]
    assert [s.split("//")[1].rsplit(":", 1)[0] for s in servers] == servers_of
    assert raw["storage"]["jetstream"]["replicas"] == 3


def test_k8s_brokers_are_a_stateless_deployment_and_nats_a_statefulset() -> None:
    k8s = _k8s()
    dep = k8s[("Deployment", "cloud-broker")]
    assert dep["spec"]["replicas"] >= 2
    pod = dep["spec"]["template"]["spec"]
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert k8s[("Service", "cloud-broker")]["spec"]["selector"] == {"app": "cloud-broker"}
    sts = k8s[("StatefulSet", "nats")]
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["serviceName"] == "nats-headless"
    assert sts["spec"]["volumeClaimTemplates"], "each NATS node keeps its store"
    conf = k8s[("ConfigMap", "nats")]["data"]["nats.conf"]
    assert _routes(conf) == [f"nats-{i}.nats-headless" for i in range(3)]
    assert k8s[("Service", "nats-headless")]["spec"]["clusterIP"] == "None"


def test_nats_configs_are_accepted_by_nats_server(tmp_path: Path) -> None:
    _check_nats_conf((CLUSTER / "nats.conf").read_text(), tmp_path, "SERVER_NAME")
    _check_nats_conf(_k8s()[("ConfigMap", "nats")]["data"]["nats.conf"], tmp_path,
                     "POD_NAME")


def test_demo_cluster_configs_render_valid(tmp_path: Path) -> None:
    """What `make demo-cluster` writes: NATS configs nats-server accepts, broker nodes on
    the cluster, an edge listing both nodes."""
    demo, cd = load_demo_module(), load_demo_module("cluster_demo")
    nodes = cd.nats_nodes(tmp_path, free_port)
    assert len({n.port for n in nodes} | {n.cluster_port for n in nodes}) == 6
    for n in nodes:
        assert n.conf.read_text().count("nats-route://") == 2
        res = subprocess.run([str(nats_server_binary()), "-t", "-c", str(n.conf)],
                             capture_output=True, text=True, timeout=30, check=False)
        assert res.returncode == 0, res.stdout + res.stderr
    _, edge = demo.write_configs(tmp_path, 1883, "5", 8080, 8080, 9100)
    template = (REPO / "deploy/local/cloud.toml").read_text()
    subst = {"@WORK@": str(tmp_path), "@EDGE_TOKEN@": "e" * 20, "@READ_TOKEN@": "r" * 20}
    tomls = [cd.broker_config(template, subst, tmp_path, f"broker-{i}", 9000 + i, nodes)
             for i in (1, 2)]
    cfgs = [parse_cloud(tomllib.loads(t.read_text()), tmp_path) for t in tomls]
    assert cfgs[0].data_dir != cfgs[1].data_dir and cfgs[0].port != cfgs[1].port
    raw = tomllib.loads(tomls[0].read_text())
    assert raw["storage"]["jetstream"]["servers"] == [n.url for n in nodes]
    cd.edge_urls(edge, [9001, 9002])
    ecfg = parse_edge(tomllib.loads(edge.read_text()), tmp_path)
    assert ecfg.uplink.endpoints == ("http://127.0.0.1:9001", "http://127.0.0.1:9002")
