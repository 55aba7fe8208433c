"""Every deploy file parses and means what it says: configs load through the same
validators the programs use, YAML is well formed with the expected kinds, the systemd
unit passes ``systemd-analyze verify`` where that tool exists."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from cloud_broker.config import parse_config as parse_cloud
from edge_agent.config import parse_config as parse_edge
from tests.helpers import REPO, free_port, load_demo_module

DEPLOY = REPO / "deploy"


def _toml(path: Path) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


# deploy/local holds templates with @PLACEHOLDERS@, checked once rendered (below);
# deploy/cluster is checked in test_cluster_deploy.py.
SHIPPED = [p for p in sorted(DEPLOY.rglob("*.toml"))
           if "local" not in p.parts and "cluster" not in p.parts]


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.name == "edge.toml"], ids=str)
def test_edge_configs_validate(path: Path) -> None:
    cfg = parse_edge(_toml(path), path.parent)
    assert cfg.streams, "an edge config needs streams"
    assert sorted(s.priority for s in cfg.streams)[0] == 0, "alarms should have priority 0"


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.name == "cloud.toml"], ids=str)
def test_cloud_configs_validate(path: Path) -> None:
    cfg = parse_cloud(_toml(path), path.parent)
    assert "telemetry" in cfg.topics


def test_local_demo_templates_render_to_valid_configs(tmp_path: Path) -> None:
    demo = load_demo_module()
    cloud, edge = demo.write_configs(tmp_path, 1883, "5", 8080, 8081, 9100)
    assert parse_cloud(_toml(cloud), tmp_path).topics["alarms"].partitions == 2
    ecfg = parse_edge(_toml(edge), tmp_path)
    assert ecfg.uplink.url == "http://127.0.0.1:8081"
    assert "@" not in cloud.read_text() + edge.read_text()


def test_k8s_configmap_holds_a_valid_cloud_config() -> None:
    doc = yaml.safe_load((DEPLOY / "cloud/k8s/configmap.yaml").read_text())
    cfg = parse_cloud(tomllib.loads(doc["data"]["cloud.toml"]))
    assert cfg.topics["telemetry"].partitions == 8


def test_yaml_files_parse_with_expected_kinds() -> None:
    kinds = set()
    for path in sorted((DEPLOY / "cloud/k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] and doc["metadata"]["name"]
            kinds.add(doc["kind"])
    assert {"StatefulSet", "Service", "ConfigMap"} <= kinds
    sts = yaml.safe_load((DEPLOY / "cloud/k8s/statefulset.yaml").read_text())
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert sts["spec"]["volumeClaimTemplates"], "the broker needs a persistent volume"


def test_compose_services() -> None:
    compose = yaml.safe_load((DEPLOY / "cloud/compose.yaml").read_text())
    assert {"mosquitto", "cloud-broker", "nats", "edge-agent", "simulator"} <= set(
        compose["services"])
    assert compose["services"]["cloud-broker"]["healthcheck"]


def test_gateway_mosquitto_conf_keeps_persistence_and_auth() -> None:
    lines = {tuple(line.split(None, 1)) for line in
             (DEPLOY / "edge/mosquitto.conf").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert ("persistence", "true") in lines
    assert ("allow_anonymous", "false") in lines
    assert any(k == "password_file" for k, *_ in lines)
    assert any(k == "acl_file" for k, *_ in lines)
    # Nagle off: else readings behind an unacknowledged one wait for the agent's ACK
    assert ("set_tcp_nodelay", "true") in lines


def test_gateway_mosquitto_conf_is_accepted_by_mosquitto(tmp_path: Path) -> None:
    """Mosquitto itself parses the config (test mode on a free port, files in tmp)."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        pytest.skip("mosquitto is not installed")
    text = (DEPLOY / "edge/mosquitto.conf").read_text()
    (tmp_path / "passwd").write_text("")
    (tmp_path / "acl").write_text((DEPLOY / "edge/acl").read_text())
    text = (text.replace("/etc/mosquitto/passwd", str(tmp_path / "passwd"))
                .replace("/etc/mosquitto/acl", str(tmp_path / "acl"))
                .replace("/var/lib/mosquitto/", f"{tmp_path}/")
                .replace("listener 1883 0.0.0.0", f"listener {free_port()} 127.0.0.1")
                .replace("log_dest syslog", "log_dest stderr"))
    # Debian's main config sets it: not a setting here (only in comments)
    assert not any(ln.startswith("persistence_location") for ln in text.splitlines())
    conf = tmp_path / "m.conf"
    # Started as root, Mosquitto drops to its own user, which cannot read pytest's tmp dir.
    conf.write_text(text + f"\npersistence_location {tmp_path}/\nuser root\n")
    # Mosquitto has no check-only flag: start it and make sure it stays up, then stop it.
    proc = subprocess.Popen([mosquitto, "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1.5)
    finally:
        proc.kill()
        err = proc.communicate()[1].decode()
    assert "Error" not in err, err


def test_gateway_mosquitto_conf_is_a_debian_drop_in(tmp_path: Path) -> None:
    """As docs/deploy.md says: Debian's own mosquitto.conf (persistence_location, a log
    file, include_dir) plus ours in conf.d starts; no "Duplicate" error."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        pytest.skip("mosquitto is not installed")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "passwd").write_text("")
    (tmp_path / "acl").write_text((DEPLOY / "edge/acl").read_text())
    (tmp_path / "conf.d/edge.conf").write_text(
        (DEPLOY / "edge/mosquitto.conf").read_text()
        .replace("/etc/mosquitto/", f"{tmp_path}/")
        .replace("listener 1883 0.0.0.0", f"listener {free_port()} 127.0.0.1")
        + "\nuser root\n")
    main = tmp_path / "mosquitto.conf"  # Debian's, with its paths moved here
    main.write_text(f"pid_file {tmp_path}/m.pid\npersistence true\n"
                    f"persistence_location {tmp_path}/\nlog_dest stderr\n"
                    f"include_dir {tmp_path}/conf.d\n")
    proc = subprocess.Popen([mosquitto, "-c", str(main)], stderr=subprocess.PIPE)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1.5)
    finally:
        proc.kill()
        err = proc.communicate()[1].decode()
    assert "Error" not in err, err


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    unit = (DEPLOY / "edge/edge-agent.service").read_text()
    assert "Restart=always" in unit and "StateDirectory=edge-agent" in unit
    assert "NoNewPrivileges=yes" in unit
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # Point ExecStart at a binary that exists here; everything else is checked as shipped.
    exe = shutil.which("true") or "/bin/true"
    local = tmp_path / "edge-agent.service"
    local.write_text(unit.replace("/opt/edgestream/bin/edge-agent", exe))
    res = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True,
                         timeout=60)
    problems = [line for line in (res.stdout + res.stderr).splitlines()
                if "edge-agent.service" in line and "mosquitto.service" not in line
                and "network-online.target" not in line]
    assert not problems, "\n".join(problems)


def _run_token_script(script: str, env: dict[str, str], tmp_path: Path) -> None:
    """A deploy file's shell script issuing tokens, run here: its paths moved into
    ``tmp_path``, ``cloud-broker`` as this checkout's module."""
    import os
    import sys

    tmp_path.mkdir(parents=True)
    cfg = tmp_path / "cloud.toml"
    cfg.write_text(f'data_dir = "{tmp_path}/broker"\n[auth]\n'
                   f'tokens_db = "{tmp_path}/broker/tokens.db"\n')
    script = (script.replace("/etc/cloud-broker/cloud.toml", str(cfg))
              .replace("/var/lib/edgestream", str(tmp_path))
              .replace("cloud-broker ", f"{sys.executable} -m cloud_broker.cli "))
    res = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **env, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr


def test_k8s_and_compose_issue_their_tokens(tmp_path: Path) -> None:
    from cloud_broker.auth import digest, lookup

    sts = yaml.safe_load((DEPLOY / "cloud/k8s/statefulset.yaml").read_text())
    [init] = sts["spec"]["template"]["spec"]["initContainers"]
    secret = yaml.safe_load((DEPLOY / "cloud/k8s/secret.yaml").read_text())["stringData"]
    env = {e["name"]: secret[e["valueFrom"]["secretKeyRef"]["key"]] for e in init["env"]}
    _run_token_script(init["args"][0], env, tmp_path / "k8s")
    db = tmp_path / "k8s/broker/tokens.db"
    assert lookup(db, digest(secret["admin-token"])).permissions == {"admin"}
    assert lookup(db, digest(secret["reader-token"])).permissions == {"read"}

    compose = yaml.safe_load((DEPLOY / "cloud/compose.yaml").read_text())
    svc = compose["services"]["tokens"]
    env = {k: v.split(":-", 1)[1].rstrip("}") for k, v in svc["environment"].items()}
    _run_token_script(svc["command"][0], env, tmp_path / "compose")
    db = tmp_path / "compose/broker/tokens.db"
    edge_cfg = _toml(DEPLOY / "cloud/edge.toml")
    edge = lookup(db, digest(edge_cfg["uplink"]["token"]))
    assert edge is not None and edge.may_ingest_as(edge_cfg["edge_id"])
    assert compose["services"]["edge-agent"]["environment"]["EDGE_AGENT__UPLINK__TOKEN"] \
        == "${EDGE_TOKEN:-" + edge_cfg["uplink"]["token"] + "}"
    # the nats-server of the stack is used by a mirror
    cloud = parse_cloud(_toml(DEPLOY / "cloud/cloud.toml"), DEPLOY / "cloud")
    assert any("nats:4222" in str(m) for m in cloud.mirrors.values())


@pytest.mark.parametrize("path", sorted((DEPLOY / "local").glob("*.py")), ids=lambda p: p.name)
def test_demo_scripts_stay_small(path: Path) -> None:
    """The demo's scripts are read by newcomers first: one job per module, as the packages."""
    assert len(path.read_text().splitlines()) <= 400, f"{path.name}: split it by responsibility"
