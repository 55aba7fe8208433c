"""The ``cloud.toml`` reference (docs/cloud-config.md), generated from the validator.

Strategy: ``parse_config`` itself is run on ``EXAMPLE`` (a document that sets every key,
with a mirror of each target) while ``tomlconf`` records what each getter reads: the key,
its type, bounds or choices, default, and the example's value (tomlconf/_reference.py).
This module only adds what code cannot say: one line of meaning per key (``MEANING``),
the type of the few keys read raw (``TYPES``), and which mirror target a key belongs to
(from ``PER_TARGET``, the validator's own table). ``cloud-broker config-reference``
prints it; a test checks that the committed doc is this output and that every key the
validator allows has a meaning.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tomlconf import Key, collect, reference

from .config import parse_config
from .mirrors.settings import PER_TARGET, PG_BATCH_BYTES, PG_BATCH_RECORDS, MirrorConfig

EXAMPLE = '''
data_dir = "/var/lib/cloud-broker"
listen = "0.0.0.0:8080"
max_body_bytes = 8388608
max_decompressed_bytes = 16777216
max_records_per_request = 10000
commit_interval_ms = 2.0
state_checkpoint_ms = 1000
auto_create_partitions = 4
max_topics = 200
max_positions_per_edge = 1000
max_positions = 100000
retention_check_ms = 30000

[tls]
cert = "/etc/cloud-broker/cert.pem"
key = "/etc/cloud-broker/key.pem"

[limits]
max_connections = 2000
header_timeout_s = 10
keep_alive_s = 5
max_header_bytes = 65536

[auth]
tokens_db = "/var/lib/cloud-broker/tokens.db"
required = true
protect_metrics = true

[topics.telemetry]
partitions = 8
retention_bytes = 10737418240
retention_ms = 604800000
segment_bytes = 67108864

[[tokens]]
token = "s3cret-edge-1"
edge_id = "gw-001"
permissions = ["ingest"]
topics = ["telemetry", "alarms"]
groups = ["dash-*"]

[storage]
backend = "jetstream"

[storage.jetstream]
servers = ["nats://nats-1:4222", "nats://nats-2:4222", "nats://nats-3:4222"]
replicas = 3
stream_prefix = "es"
user = "broker"
password = "nats-s3cret"
request_timeout_s = 5.0
cache_bytes = 33554432
readahead_bytes = 8388608
readahead_total_bytes = 67108864

[kafka]
listen = "0.0.0.0:9092"
advertised = "broker.example.com:9092"
sasl = true
compression = "zstd"
max_request_bytes = 1048576
max_connections = 1000

[mirrors.dr]
target = "broker"
topic = "telemetry"
run = "standalone"
batch_records = 1000
batch_bytes = 1048576
wait_ms = 1000
max_backoff_s = 30
verify_interval_s = 30
timeout_s = 10
url = "https://dr.example.com:8443"
token = "dr-admin-token"
target_topic = "telemetry-dr"

[mirrors.js]
target = "nats"
topic = "telemetry"
servers = ["nats://nats-1:4222", "nats://nats-2:4222"]
stream = "EDGESTREAM_telemetry"
subject_prefix = "edgestream"
replicas = 3
duplicate_window_s = 120

[mirrors.archive]
target = "sql"
topic = "telemetry"
path = "/var/lib/cloud-broker/archive.db"
table = "records"
json_columns = true

[mirrors.pg]
target = "postgres"
topic = "telemetry"
dsn = "postgresql://mirror@db.example.com:5432/telemetry"
password_env = "PGPASSWORD_MIRROR"
table = "readings"
fields = {temp = "double", site = "text"}
hypertable = true
connections = 4
sslmode = "verify-full"
sslrootcert = "/etc/cloud-broker/pg-ca.pem"
sslcert = "/etc/cloud-broker/pg-client.pem"
sslkey = "/etc/cloud-broker/pg-client.key"
'''

_TARGET_OF = {k: t for t, keys in PER_TARGET.items() for k in keys}
_SHARED = {k for k in _TARGET_OF if sum(k in keys for keys in PER_TARGET.values()) > 1}

TYPES = {
    "listen": "string (host:port)",
    "storage.jetstream.servers": "list of strings (nats, tls URLs)",
    "kafka.listen": "string (host:port)",
    "kafka.advertised": "string (host:port)",
    "mirrors.<name>.target": "string (one of " + ", ".join(PER_TARGET) + ")",
    "mirrors.<name>.url": "string (http(s)://host:port)",
    "mirrors.<name>.servers": "string or list of strings (nats, tls, ws, wss URLs)",
    "mirrors.<name>.fields": "table of name = type (text, bigint, double, boolean, jsonb)",
}
DEFAULTS = {"kafka.advertised": "listen", "mirrors.<name>.target": "required",
            "mirrors.<name>.topic": "required", "tokens.token": "required",
            "max_decompressed_bytes": "2 x max_body_bytes",
            # the postgres target takes larger batches (mirrors/settings.py)
            "mirrors.<name>.batch_records":
                f"{MirrorConfig.batch_records} (postgres: {PG_BATCH_RECORDS})",
            "mirrors.<name>.batch_bytes":
                f"{MirrorConfig.batch_bytes} (postgres: {PG_BATCH_BYTES})"}

MEANING = {
    "data_dir": "where partitions, group offsets and ingest state live (one broker per "
                "directory: it is locked)",
    "listen": "address of the HTTP API (ingest, consumers, mirrors, /healthz, /metrics)",
    "max_body_bytes": "largest request body (compressed ingest batch); larger: 413",
    "max_decompressed_bytes": "largest ingest body after decompression",
    "max_records_per_request": "records one ingest or replication request may hold (an "
                               "edge's uplink.max_batch_records must not exceed it)",
    "commit_interval_ms": "group commit window of the partitions: requests arriving "
                          "together share one fsync",
    "state_checkpoint_ms": "how often the ingest dedup state is checkpointed (a hint, "
                           "rebuilt from the partitions)",
    "auto_create_partitions": "create an unknown topic on its first ingest with this many "
                              "partitions; 0: unknown topics are refused",
    "max_topics": "topics the broker may hold; auto-creation stops there",
    "max_positions_per_edge": "ingest positions (stream and generation pairs) one edge id "
                              "may open; a batch that would open one more is refused "
                              "(429) until an operator raises it",
    "max_positions": "ingest positions of all edges together (each is kept for good: "
                     "memory and the ingest checkpoint grow with them); past it new ones "
                     "are refused (429)",
    "retention_check_ms": "how often each topic's retention is applied",
    "tls": "serve HTTPS (both keys required)",
    "tls.cert": "PEM certificate (chain)",
    "tls.key": "PEM private key of the certificate",
    "limits": "what one HTTP connection may hold (docs/deploy.md)",
    "limits.max_connections": "open HTTP connections; at the cap an idle one is closed to "
                              "admit a new one, else 503",
    "limits.header_timeout_s": "a request's headers must arrive within this time",
    "limits.keep_alive_s": "idle time between two requests before the connection is closed",
    "limits.max_header_bytes": "request line and headers; larger: 431",
    "auth": "who may call (docs/security.md)",
    "auth.tokens_db": "SQLite table of tokens managed with `cloud-broker tokens` (no restart)",
    "auth.required": "false: no token is checked (local demos only; logged as a warning)",
    "auth.protect_metrics": "/metrics and /openapi.json need a read token; /healthz "
                            "details too",
    "topics.<name>": "a topic and its partitions (the name: [A-Za-z0-9][A-Za-z0-9._-]*)",
    "topics.<name>.partitions": "partitions (device keys are spread by murmur2)",
    "topics.<name>.retention_bytes": "per partition: oldest segments deleted beyond this",
    "topics.<name>.retention_ms": "segments older than this are deleted",
    "topics.<name>.segment_bytes": "size of one partition log segment",
    "tokens": "tokens in the file (the table of auth.tokens_db is the other source)",
    "tokens.token": "the bearer token (at least 8 characters; only its digest is kept)",
    "tokens.edge_id": "the edge it may ingest as (`*`: any edge)",
    "tokens.permissions": "`ingest`, `read`, `admin` (admin may do everything)",
    "tokens.topics": "topics it may use (fnmatch patterns)",
    "tokens.groups": "consumer groups it may use (fnmatch patterns)",
    "kafka": "the Kafka wire-protocol listener for consumers (docs/kafka.md); absent: off",
    "kafka.listen": "address of the Kafka listener",
    "kafka.advertised": "the address Metadata answers (what clients connect to)",
    "kafka.sasl": "SASL/PLAIN with a read token as password; false only with "
                  "auth.required = false",
    "kafka.compression": "compression of the record batches served",
    "kafka.max_request_bytes": "largest Kafka request",
    "kafka.max_connections": "open Kafka connections",
    "storage": "where the partitions live (docs/cluster.md); absent: the local store",
    "storage.backend": "`local`: segment files under data_dir; `jetstream`: a NATS "
                       "JetStream cluster shared by every broker node (cluster mode)",
    "storage.jetstream": "the JetStream cluster (read only with backend = \"jetstream\")",
    "storage.jetstream.servers": "the cluster's client URLs",
    "storage.jetstream.replicas": "replicas of each partition's stream when it is created",
    "storage.jetstream.stream_prefix": "streams are <prefix>_<topic>_<partition>; the "
                                       "groups bucket <prefix>_groups",
    "storage.jetstream.user": "NATS user (with password)",
    "storage.jetstream.password": "NATS password",
    "storage.jetstream.token": "NATS token (instead of user/password)",
    "storage.jetstream.creds_file": "NATS credentials file (instead of user/password)",
    "storage.jetstream.request_timeout_s": "timeout of one JetStream request",
    "storage.jetstream.cache_bytes": "per node, bytes of recent records kept to serve "
                                     "reads at the tail without a round trip",
    "storage.jetstream.readahead_bytes": "per partition, bytes of older records fetched "
                                         "ahead of a consumer reading on (0: none)",
    "storage.jetstream.readahead_total_bytes": "per node, the most read-ahead held for all "
                                               "partitions together",
    "mirrors.<name>": "a resumable copy of one topic into a target (docs/mirrors.md)",
    "mirrors.<name>.target": "where the copy goes",
    "mirrors.<name>.topic": "the source topic (must exist at start)",
    "mirrors.<name>.run": "`broker`: inside this broker; `standalone`: by `cloud-broker "
                          "mirror` over HTTP",
    "mirrors.<name>.batch_records": "records per batch written to the target",
    "mirrors.<name>.batch_bytes": "bytes per batch written to the target",
    "mirrors.<name>.wait_ms": "long-poll wait for new records",
    "mirrors.<name>.max_backoff_s": "cap of the retry backoff while the target is down",
    "mirrors.<name>.verify_interval_s": "how often the target's position is re-checked",
    "mirrors.<name>.timeout_s": "timeout of one write to the target",
    "mirrors.<name>.url": "the target broker",
    "mirrors.<name>.token": "an admin token of the target broker",
    "mirrors.<name>.target_topic": "the topic on the target (default: the same name)",
    "mirrors.<name>.servers": "NATS servers",
    "mirrors.<name>.stream": "JetStream stream (default EDGESTREAM_<topic>)",
    "mirrors.<name>.subject_prefix": "subjects are <prefix>.<topic>.<partition>",
    "mirrors.<name>.replicas": "replicas of the stream when it is created",
    "mirrors.<name>.duplicate_window_s": "JetStream's Nats-Msg-Id deduplication window",
    "mirrors.<name>.path": "the SQLite file",
    "mirrors.<name>.table": "the table written",
    "mirrors.<name>.json_columns": "JSON values also as a queryable json column",
    "mirrors.<name>.dsn": "postgresql:// URL or libpq key=value string (never echoed)",
    "mirrors.<name>.password": "the database password (prefer password_env)",
    "mirrors.<name>.password_env": "environment variable holding the password",
    "mirrors.<name>.fields": "typed columns extracted from JSON values",
    "mirrors.<name>.hypertable": "make the table a TimescaleDB hypertable when available",
    "mirrors.<name>.connections": "most connections at once (partitions share them)",
    "mirrors.<name>.sslmode": "libpq sslmode",
    "mirrors.<name>.sslrootcert": "CA file for verify-ca / verify-full",
    "mirrors.<name>.sslcert": "client certificate",
    "mirrors.<name>.sslkey": "client key",
}


def rename(key: str) -> str:
    """A key of EXAMPLE in its reference form (``topics.telemetry.x`` ->
    ``topics.<name>.x``, ``tokens[0].x`` -> ``tokens.x``)."""
    key = re.sub(r"^(topics|mirrors)\.[^.]+", r"\1.<name>", key)
    return re.sub(r"^tokens\[\d+\]", "tokens", key)


#: the other ways to sign in to NATS (one per config: they exclude each other)
_NATS_AUTH = ({"creds_file": "/etc/cloud-broker/nats.creds"}, {"token": "nats-t0ken"})


def keys() -> dict[str, Key]:
    doc = tomllib.loads(EXAMPLE)
    others = []
    for auth in _NATS_AUTH:
        js = {k: v for k, v in doc["storage"]["jetstream"].items()
              if k not in ("user", "password")}
        others.append({"data_dir": doc["data_dir"],
                       "storage": {"backend": "jetstream", "jetstream": {**js, **auth}}})
    return collect(lambda d: parse_config(d, Path("/etc/cloud-broker")), [doc, *others],
                   rename)


def meaning_of(key: str) -> str:
    text = MEANING.get(key, "")
    short = key.rpartition(".")[2]
    if key.startswith("mirrors.<name>.") and short in _TARGET_OF:
        targets = [t for t, ks in PER_TARGET.items() if short in ks]
        text = f"*{', '.join(targets)}*: {text}"
    return text


def generate() -> str:
    found = keys()
    head = ("# cloud.toml reference\n\n"
            "Generated by `cloud-broker config-reference` from the validator itself "
            "(`cloud_broker/config.py`,\n`cloud_broker/mirrors/settings.py`): do not edit; "
            "a test keeps it equal to the output.\nErrors, environment and common rules: "
            "[configuration.md](configuration.md). Keys of a mirror\nmarked *broker*, "
            "*nats*, *sql* or *postgres* belong to that target only.\n\n"
            "## Example\n\n```toml" + EXAMPLE + "```\n\n## Keys\n")
    return reference(found, {k: meaning_of(k) for k in found}, TYPES, head, DEFAULTS)


def allowed_keys() -> set[str]:
    """Every key the validator allows (its ``only`` lists), in reference form."""
    out: set[str] = set()
    for k in keys().values():
        out |= k.known
    return out


__all__ = ["EXAMPLE", "MEANING", "allowed_keys", "generate", "keys"]
