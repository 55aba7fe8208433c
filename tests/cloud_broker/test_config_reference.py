"""docs/cloud-config.md is what ``cloud-broker config-reference`` generates from the
validator, and it covers every key the validator allows, each with a meaning."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from cloud_broker.config import parse_config
from cloud_broker.config_reference import EXAMPLE, MEANING, allowed_keys, generate, keys
from tests.helpers import REPO
from tomlconf import Section, recording


def test_committed_reference_is_the_generated_one() -> None:
    committed = (REPO / "docs/cloud-config.md").read_text()
    assert committed == generate(), (
        "docs/cloud-config.md is stale: run cloud-broker config-reference > "
        "docs/cloud-config.md")


def test_every_allowed_key_is_documented_with_a_meaning() -> None:
    found = keys()
    rows = {k for k, v in found.items() if k and not v.known
            and v.kind not in ("named tables", "array of tables", "table")}
    assert allowed_keys() <= set(found), allowed_keys() - set(found)
    assert {k for k in rows if not MEANING.get(k)} == set()
    assert set(MEANING) <= set(found), set(MEANING) - set(found)  # nothing stale
    text = generate()
    for k in rows:
        assert f"| `{k.rpartition('.')[2]}` |" in text, k


def test_the_example_is_a_valid_config_and_sets_every_key() -> None:
    cfg = parse_config(tomllib.loads(EXAMPLE))
    assert cfg.kafka is not None and set(cfg.mirrors) == {"dr", "js", "archive", "pg"}
    assert all(v.example is not None or v.secret for k, v in keys().items()
               if k and not v.known and v.kind not in ("named tables", "array of tables",
                                                        "table")), "a key without example"


def test_recording_sees_getters_only_inside_the_block() -> None:
    s = Section({"port": 5}, "mqtt")
    assert s.integer("port", 1883, minimum=1) == 5  # no recording: nothing noted
    with recording() as notes:
        s.integer("port", 1883, minimum=1, maximum=65535)
        s.string("mode", "a", choices=iter(["a", "b"]))  # a one-shot iterable is fine
    assert [(n.key, n.kind, n.default, n.want, n.value) for n in notes] == [
        ("mqtt.port", "integer", 1883, "1..65535", 5), ("mqtt.mode", "string", "a",
                                                        "one of a, b", None)]


def test_command_prints_it() -> None:
    res = subprocess.run([sys.executable, "-m", "cloud_broker.cli", "config-reference"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout == generate()
