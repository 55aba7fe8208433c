"""The partition store conformance suite (store_conformance.py) over every store
implementation (store_impls.IMPLEMENTATIONS)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cloud_broker.store_conformance import StoreConformance
from tests.cloud_broker.store_impls import IMPLEMENTATIONS


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda i: i.name)
def impl(request: pytest.FixtureRequest) -> Any:
    return request.param


class TestPartitionStore(StoreConformance):
    pass
