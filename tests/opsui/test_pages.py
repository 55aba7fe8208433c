"""The operators' pages as served: the broker's and the agent's ``/ui`` answer with the
page, its scripts and a strict security policy, and nothing outside the page's files
whatever the path (in process, Starlette's TestClient; the browser test drives them)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_broker.config import parse_config
from cloud_broker.http import create_app
from edge_agent.status import create_app as agent_app
from opsui import CSP, STATIC, ui_routes

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

FILE_TYPES = ("text/html", "text/javascript", "application/javascript", "text/css")


@pytest.fixture(scope="module", params=["broker", "agent"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, TestClient]]:
    if request.param == "broker":
        cfg = parse_config({"data_dir": str(tmp_path_factory.mktemp("ui") / "data"),
                            "tokens": [{"token": "reader-1", "permissions": ["read"]}]})
        app: Any = create_app(cfg)
    else:  # the agent's status app around a fixed document (its own tests build real ones)
        app = agent_app(lambda: {"problems": []}, lambda: (b"", "text/plain"), 60.0)
    with TestClient(app) as client:
        yield request.param, client


def test_the_page_is_served_with_a_strict_policy(served: tuple[str, TestClient]) -> None:
    page_name, client = served
    resp = client.get("/ui", follow_redirects=False)
    assert resp.status_code in (307, 308) and resp.headers["location"].endswith("/ui/")
    page = client.get("/ui/")  # the page holds no data: no token needed
    assert page.status_code == 200 and f"/ui/{page_name}.js" in page.text
    assert page.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe" not in CSP
    assert "<script>" not in page.text  # no inline script for the policy to allow
    for asset in (f"/ui/{page_name}.js", "/ui/common/chart.js", "/ui/common/ui.js",
                  "/ui/common/ui.css"):
        resp = client.get(asset)
        assert resp.status_code == 200 and resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["content-type"].split(";")[0] in FILE_TYPES


def test_the_scripts_write_data_as_text_only() -> None:
    # the policy forbids inline script; text-only DOM writes keep names from becoming markup
    for js in STATIC.glob("*/*.js"):
        text = js.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                     "eval(", "new Function"):
            assert sink not in text, f"{js.name} uses {sink}"


def test_an_unknown_page_is_refused() -> None:
    with pytest.raises(ValueError, match="no page"):
        ui_routes("../etc")


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.one_of(st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]),
                              max_size=60),
                      st.lists(st.sampled_from(["..", "%2e%2e", "%2F", "common", "broker",
                                                "agent", "index.html", "", "%00", "/"]),
                               max_size=6).map("/".join)))
def test_hostile_paths_reach_only_the_pages_files(served: tuple[str, TestClient],
                                                  path: str) -> None:
    _, client = served
    resp = client.get("/ui/" + quote(path, safe="/.%~"))  # traversal attempts included
    assert resp.status_code < 500
    if resp.status_code == 200:
        assert resp.headers["content-type"].split(";")[0] in FILE_TYPES
        assert resp.content in {p.read_bytes() for p in STATIC.glob("*/*")}


def test_static_files_are_packaged() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"opsui*"' in pyproject and 'opsui = ["static/*/*"]' in pyproject
