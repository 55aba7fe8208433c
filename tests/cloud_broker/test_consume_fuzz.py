"""schemathesis against the consumer API's OpenAPI document: no request gets a 5xx.

Positive and negative cases (schemathesis breaks the schema on purpose) are sent to a
real broker subprocess whose partitions hold data and whose group has a member, so
generated offsets, partitions and group calls reach the code behind the validation.
The SSE stream endpoint never ends by design and is left out. ``FUZZ_EXAMPLES=500``
runs a longer search.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from consume_testing import Ingester, url_of
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from cloud_broker.http import OPENAPI
from tests.helpers import Server, broker_server

pytestmark = pytest.mark.timeout(600)

schema = schemathesis.openapi.from_dict(OPENAPI).include(
    path_regex=r"^/v1/(topics|groups)").exclude(path_regex=r"/stream$")
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")))


@pytest.fixture(scope="module")
def fuzz_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    server: Server = broker_server(tmp, topics={"telemetry": 8, "t": 1}).start()
    try:
        url = url_of(server)
        Ingester(url).send(devices=16, per_device=5)
        r = httpx.post(f"{url}/v1/groups/g/join", json={"member_id": "m", "topics": ["t"],
                                                       "session_timeout_ms": 300000})
        assert r.status_code == 200
        yield url
    finally:
        server.stop()


@schema.parametrize()
def test_no_server_errors(case: schemathesis.Case, fuzz_broker: str) -> None:
    if case.query and "wait_ms" in case.query:
        case.query["wait_ms"] = 0  # a long-poll at the end only costs time
    case.call_and_validate(base_url=fuzz_broker, checks=[not_a_server_error], timeout=30)
