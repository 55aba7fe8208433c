"""The configuration toolkit (tomlconf/): one ConfigError for every process, one set of
validators with the same rules and words everywhere, credentials masked, and the import
circle between the broker's config and its mirror settings gone."""

from __future__ import annotations

import ast
import pickle
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

import tomlconf
from tomlconf import ConfigError, Section, apply_env, load_toml

ROOT = Path(__file__).parents[2]
EXPORTED = ["MASK", "ConfigError", "Key", "Section", "apply_env", "check_ca_file", "collect",
            "is_host", "load_toml", "mask_secrets", "parse_listen", "parse_url", "parse_urls",
            "recording", "reference", "shown"]


def test_exports_are_pinned() -> None:
    assert sorted(tomlconf.__all__) == sorted(EXPORTED)
    for name in EXPORTED:
        assert getattr(tomlconf, name).__doc__ or name == "MASK"


def test_every_process_raises_the_same_config_error() -> None:
    import cloud_broker.config
    import cloud_broker.mirrors.settings
    import device_simulator.config
    import edge_agent.config

    assert (edge_agent.config.ConfigError is cloud_broker.config.ConfigError
            is cloud_broker.mirrors.settings.ConfigError is device_simulator.config.ConfigError
            is ConfigError)
    defined = [p.relative_to(ROOT).as_posix() for p in ROOT.glob("*/**/*.py")
               if ".venv" not in p.parts and p.parts[len(ROOT.parts)] != "tests"
               and "class ConfigError(" in p.read_text()]
    assert defined == ["tomlconf/_errors.py"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.add("." * node.level + (node.module or ""))
    return out


def test_tomlconf_is_bottom_layer_and_mirror_settings_import_no_broker_module() -> None:
    ours = ("shared_log", "uplink", "edge_agent", "cloud_broker", "device_simulator")
    for path in (ROOT / "tomlconf").glob("*.py"):
        assert not any(i.split(".")[0] in ours for i in _imports(path)), path
    settings = _imports(ROOT / "cloud_broker/mirrors/settings.py")
    assert not any(i.startswith("..") or i.startswith("cloud_broker") for i in settings)


def test_broker_config_types_its_mirrors() -> None:
    from cloud_broker.config import BrokerConfig, parse_config
    from cloud_broker.mirrors.settings import MirrorConfig
    from cloud_broker.storage.settings import StorageConfig

    hints = typing.get_type_hints(BrokerConfig, localns={"MirrorConfig": MirrorConfig,
                                                         "StorageConfig": StorageConfig})
    assert hints["mirrors"] == dict[str, MirrorConfig]
    cfg = parse_config({"data_dir": "d", "topics": {"t": {}},
                        "mirrors": {"a": {"topic": "t", "target": "sql", "path": "a.db"}}})
    assert isinstance(cfg.mirrors["a"], MirrorConfig)


def test_the_same_mistake_reads_the_same_in_agent_and_broker() -> None:
    from cloud_broker.config import parse_config as parse_cloud
    from edge_agent.config import parse_config as parse_edge

    url = "http://admin:hunter2@dr:99999"
    edge = {"edge_id": "gw1", "data_dir": "d", "uplink": {"url": url},
            "streams": [{"name": "t", "topics": ["a"]}]}
    cloud = {"data_dir": "d", "mirrors": {"dr": {"topic": "t", "target": "broker", "url": url}}}
    with pytest.raises(ConfigError) as e1:
        parse_edge(edge)
    with pytest.raises(ConfigError) as e2:
        parse_cloud(cloud)
    assert e1.value.key == "uplink.url" and e2.value.key == "mirrors.dr.url"
    assert str(e1.value).split(": ", 1)[1] == str(e2.value).split(": ", 1)[1]
    assert "hunter2" not in str(e1.value) and "admin:***@" in str(e1.value)
    edge.pop("uplink")
    for raw, key in ((edge | {"status": {"listen": "0.0.0.0"}}, "status.listen"),
                     ({"data_dir": "d", "listen": "0.0.0.0"}, "listen")):
        with pytest.raises(ConfigError, match=r"must be 'host:port' such as") as e:
            (parse_edge if "edge_id" in raw else parse_cloud)(raw)
        assert e.value.key == key


@pytest.mark.parametrize(("raw", "call", "message"), [
    ({"n": True}, lambda s: s.integer("n", 1, minimum=0), "n: must be an integer >= 0, got True"),
    ({"n": 1.5}, lambda s: s.integer("n", 1, minimum=0, maximum=9),
     "n: must be an integer in 0..9, got 1.5"),
    ({"x": float("nan")}, lambda s: s.number("x", 1.0, minimum=0), "x: must be a number >= 0"),
    ({"x": float("inf")}, lambda s: s.number("x", 1.0, minimum=0), "x: must be a number >= 0"),
    ({"b": "yes"}, lambda s: s.boolean("b", False), "b: must be true or false, got 'yes'"),
    ({"c": "lz4"}, lambda s: s.string("c", "zstd", choices=("zstd", "gzip")),
     "c: must be one of zstd, gzip, got 'lz4'"),
    ({"k": 5}, lambda s: s.string("k", None, secret=True), "k: must be a string"),
    ({"zz": 1}, lambda s: s.only({"a", "b"}), "zz: unknown key (known: a, b)"),
    ({"t": 5}, lambda s: s.section("t"), "t: must be a table"),
    ({"l": [1]}, lambda s: s.tables("l"), "l[0]: must be a table"),
    ({"p": ""}, lambda s: s.path("p", Path("/")), "p: must be a non-empty path string, got ''"),
])
def test_section_rules(raw: dict[str, Any], call: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        call(Section(raw))
    assert str(err.value).startswith(message), str(err.value)


def test_absent_and_null_take_the_default_and_values_are_shown_short() -> None:
    s = Section({"a": None, "nested": {"x": 1}}, "top")
    assert s.integer("a", 7, minimum=0) == 7 and s.string("missing", "d") == "d"
    assert s.section("nested", known={"x"}).integer("x", 0, minimum=0) == 1
    with pytest.raises(ConfigError) as err:
        Section({"v": "x" * 10_000}, "top").string("v", "", choices=("a",))
    assert err.value.key == "top.v" and len(str(err.value)) < 200
    with pytest.raises(ConfigError) as err:
        Section({"token": "http://u:pw@h"}).string("token", None, check=lambda v: False)
    assert "pw" not in str(err.value)


def test_config_errors_pickle_and_mask() -> None:
    err = ConfigError("mirrors.js.servers[0]", "got 'nats://user:pa55@n:4222?token=abc'")
    assert "pa55" not in str(err) and "abc" not in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is ConfigError and again.key == err.key and str(again) == str(err)


def test_files_and_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_toml(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_toml(tmp_path)
    p = tmp_path / "a.toml"
    p.write_text('[s]\nv = 1\n[[list]]\nx = 1\n')
    raw = apply_env(load_toml(p), {"APP__S__V": "2", "APP__S__NAME": "not toml at all",
                                   "APP__LIST__0__X": "[1, 2]", "OTHER__S__V": "9"}, "APP__")
    assert raw == {"s": {"v": 2, "name": "not toml at all"}, "list": [{"x": [1, 2]}]}
    with pytest.raises(ConfigError, match="APP__LIST__5__X: no element 5"):
        apply_env(raw, {"APP__LIST__5__X": "1"}, "APP__")


def test_a_nats_mirror_without_nats_py_is_a_config_error(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from cloud_broker.config import parse_config

    raw = {"data_dir": "d", "topics": {"t": {}},
           "mirrors": {"js": {"topic": "t", "target": "nats"}}}
    assert parse_config(raw).mirrors["js"].target == "nats"  # installed: fine
    monkeypatch.setitem(sys.modules, "nats", None)  # as if nats-py were not installed
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert err.value.key == "mirrors.js.target"
    assert "needs nats-py" in str(err.value) and "edgestream[nats]" in str(err.value)


def test_the_broker_cli_refuses_a_nats_mirror_without_nats_py_in_one_line(
        tmp_path: Path) -> None:
    import subprocess

    cfg = tmp_path / "cloud.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\nlisten = "127.0.0.1:0"\n'
                   '[auth]\nrequired = false\n'
                   '[mirrors.js]\ntopic = "t"\ntarget = "nats"\n')
    script = ("import sys; sys.modules['nats'] = None\n"
              "from cloud_broker.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    res = subprocess.run([sys.executable, "-c", script, "serve", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "configuration error: mirrors.js.target: " in lines[0]


def test_libpq_key_value_passwords_are_masked_by_the_one_rule() -> None:
    masked = tomlconf.mask_secrets("host=db user=u password=hunter2 dbname=t")
    assert "hunter2" not in masked and "user=u" in masked and "dbname=t" in masked
    assert "s3 cret" not in tomlconf.mask_secrets("host=db password='s3 cret' port=5432")
