"""The cut of cloud_broker into rooms, checked: public surfaces, who imports the web
framework, private modules, import circles and module sizes.

The import checks read the source (the AST of every module of every package), so they
see imports inside functions too, and need nothing imported or running.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared_log", "uplink", "tomlconf", "supervision", "opsui", "edge_agent",
            "cloud_broker",
            "device_simulator", "mqttproto")
#: the only modules of cloud_broker that may import these (the HTTP room and the CLI)
WEB = {"starlette": ("cloud_broker.http",), "uvicorn": ("cloud_broker.http", "cloud_broker.cli")}
MAX_LINES = 400
#: import circles known and not yet removed; each must disappear, never grow
KNOWN_CIRCLES: set[frozenset[str]] = set()  # none: keep it so

ROOMS: dict[str, list[str]] = {
    "cloud_broker.storage": [
        "InvalidRecord", "LogError", "OffsetOutOfRange", "Partition", "PartitionLog",
        "PartitionStore", "PartitionStoreAPI", "UnknownTopic"],
    "cloud_broker.ingest": [
        "INLINE_BYTES", "ORIGIN_HEADER", "RESERVED_HEADERS", "RESERVED_PREFIX", "STATE_FILE",
        "IngestStats", "IngestUnavailable", "Ingestor", "PositionLimit", "RejectedBatch",
        "decode_off_loop",
        "first_reserved", "frame_block", "parse_origin", "partition_for",
        "small_enough_inline"],
    "cloud_broker.groups": [
        "ASSIGNORS", "MAX_JOIN_WAIT_S", "MAX_SESSION_MS", "MIN_SESSION_MS", "AssignorMismatch",
        "Group", "GroupActive", "GroupBackend", "GroupConflict", "GroupCoordinator",
        "GroupError", "GroupState", "GroupStore",
        "GroupStoreError", "KafkaGroupError", "KafkaGroups", "LocalGroupBackend",
        "MemberInUse", "NotAssigned",
        "RebalanceInProgress",
        "StaleGeneration", "TopicPartition", "UnknownGroup", "UnknownMember", "assign_range",
        "assign_round_robin"],
    "cloud_broker.kafka": ["SUPPORTED", "KafkaServer", "encode_batches"],
    "cloud_broker.http": [
        "OPENAPI", "ConnectionGuard", "MirrorOps", "create_app", "endpoint", "mirror_app",
        "problem_response", "serve_mirror_ops"],
    "cloud_broker.client": [
        "BrokerClient", "BrokerUnavailable", "Consumer", "ConsumerError", "ConsumerRecord",
        "FetchResponse", "OffsetOutOfRangeError", "RebalanceError", "exit_code"],
    "cloud_broker.mirrors": [
        "CheckpointStore", "HttpSource", "LocalSource", "MirrorCollector", "MirrorConfig",
        "MirrorExists", "MirrorManager", "MirrorRunner", "PartitionStatus", "Source",
        "SourceBatch", "SourceUnavailable", "Target", "TargetConflict", "TargetError",
        "TargetRejected", "TargetUnavailable", "build_target", "parse_mirror",
        "parse_mirrors"],
}


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_each_room_exports_exactly_its_public_names(room: str) -> None:
    module = importlib.import_module(room)
    assert sorted(module.__all__) == sorted(ROOMS[room])
    for name in module.__all__:
        assert hasattr(module, name), name


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every module name an import statement of ``name`` may load: ``from a import b``
    yields ``a`` and ``a.b`` (b may be a module), relative imports made absolute."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                prefix = ".".join([*base, *([node.module] if node.module else [])])
            else:
                prefix = node.module or ""
            yield prefix, node.lineno
            for alias in node.names:
                yield f"{prefix}.{alias.name}", node.lineno


def test_modules_are_found() -> None:
    assert "cloud_broker.http.consume" in MODULES and "shared_log._log" in MODULES


def test_only_the_http_room_imports_the_web_framework() -> None:
    found = []
    for name, path in MODULES.items():
        if not name.startswith("cloud_broker"):
            continue
        for target, line in _imports(name, path):
            top = target.split(".")[0]
            allowed = WEB.get(top)
            if allowed is not None and not any(
                    name == a or name.startswith(a + ".") for a in allowed):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not found, found


def test_no_module_imports_another_packages_private_module() -> None:
    found = []
    for name, path in MODULES.items():
        own = name.split(".")[0]
        for target, line in _imports(name, path):
            parts = target.split(".")
            if parts[0] in PACKAGES and parts[0] != own and any(
                    p.startswith("_") and not p.startswith("__") for p in parts[1:]):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not found, found


def _graph() -> dict[str, set[str]]:
    """Module -> the modules it imports (its own parent packages are loaded before it
    anyway: not an edge)."""
    return {name: {t for t, _ in _imports(name, path)
                   if t in MODULES and t != name and not name.startswith(t + ".")}
            for name, path in MODULES.items()}


def _circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:  # recursion: the graph is a few hundred modules at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle() -> None:
    new = [sorted(c) for c in _circles(_graph()) if c not in KNOWN_CIRCLES]
    assert not new, new


def test_the_circle_check_finds_circles_and_only_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set(), "f": {"e"}}
    assert _circles(graph) == [frozenset({"a", "b", "c"})]


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("cloud_broker")))
def test_no_cloud_broker_module_over_400_lines(name: str) -> None:
    lines = MODULES[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by responsibility"


#: the few modules of the other packages still a little over MAX_LINES, with their size
#: when this was written: each may shrink, none may grow (split it instead)
OVER_LIMIT = {"edge_agent.ingest": 411, "shared_log._verify": 425,
              "shared_log._segment": 433}


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.startswith("cloud_broker")))
def test_no_module_grows_past_the_limit(name: str) -> None:
    lines = MODULES[name].read_text().count("\n")
    limit = OVER_LIMIT.get(name, MAX_LINES)
    assert lines <= limit, f"{name} has {lines} lines (limit {limit}): split it"
