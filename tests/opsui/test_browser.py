"""The operators' pages in a real browser: headless Chromium (Debian's ``chromium``)
driven by Playwright against a running pipeline (Mosquitto, broker, agent, devices). The
agent's page and the broker's dashboard must show numbers that move and charts that
grow; with the uplink cut the agent's page says "stalled" and the broker's page shows
the edge silent; with it back, the agent's says "connected" again. Screenshots of every
step are saved in the test's tmp dir (``*.png``)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Server
from tests.opsui.pipeline import Pipeline, pipeline

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 20_000


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw, tempfile.TemporaryDirectory(dir=tmp_path) as profile:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1280, "height": 1100})
        try:
            yield context
        finally:
            context.close()


def _text(page: object, selector: str) -> str:
    return page.inner_text(selector)  # type: ignore[attr-defined]


def _points(page: object, canvas: str) -> int:
    return int(page.get_attribute(canvas, "data-points") or 0)  # type: ignore[attr-defined]


def _wait_js(page: object, expression: str, arg: object = None) -> None:
    page.wait_for_function(expression, arg=arg, timeout=WAIT_MS)  # type: ignore[attr-defined]


def test_the_pages_show_a_live_pipeline_and_a_stalled_uplink(
        tmp_path: Path, mosquitto: Server, browser_page: object) -> None:
    context = browser_page
    shots = tmp_path
    errors: list[str] = []  # script errors and policy (CSP) violations, of both pages
    mirror = (f'[mirrors.archive]\ntopic = "telemetry"\ntarget = "sql"\n'
              f'path = "{tmp_path / "archive.db"}"\n')
    with pipeline(tmp_path / "run", mosquitto.port, cloud_extra=mirror) as run:
        agent = _page(context, errors)
        agent.goto(f"{run.agent_url}/ui/?stalled_after=3")
        _live_agent_page(agent)
        agent.screenshot(path=shots / "agent-live.png", full_page=True)

        _commit(run, "dashboards", 0)
        broker = _page(context, errors)
        broker.goto(f"{run.cloud_url}/ui?silent_after=3")
        _login_and_see_data(broker, run)
        _wait_js(broker, """() => [...document.querySelectorAll('#groups tbody tr')]
                 .some(r => r.cells[0].textContent === 'dashboards'
                       && +r.cells[7].textContent > 0)""")
        _wait_js(broker, """() => [...document.querySelectorAll('#mirrors tbody tr')]
                 .some(r => r.cells[0].textContent === 'archive'
                       && ['copying', 'idle'].includes(r.cells[3].textContent))""")
        broker.screenshot(path=shots / "broker-live.png", full_page=True)

        run.proxy.down()  # the uplink is cut: the agent retries, the cloud hears nothing
        _wait_js(agent, "() => document.getElementById('uplink').textContent === 'stalled'")
        _wait_js(agent, "() => parseInt(document.getElementById('backlog').textContent) > 0")
        assert _text(agent, "#uplink-error") != "none"
        agent.screenshot(path=shots / "agent-stalled.png", full_page=True)
        _wait_js(broker, """() => [...document.querySelectorAll('#edges tbody tr')]
                 .some(r => r.cells[0].textContent === 'demo-gw'
                       && r.cells[3].textContent === 'silent')""")
        broker.screenshot(path=shots / "broker-silent.png", full_page=True)

        stalled_backlog = _stream_cell(agent, "telemetry", 5)
        run.proxy.up()
        _wait_js(agent, "() => document.getElementById('uplink').textContent === 'connected'")
        _wait_js(agent, """n => [...document.querySelectorAll('#streams tbody tr')]
                 .some(r => r.cells[0].textContent === 'telemetry' && +r.cells[5].textContent < n)
                 """, min(stalled_backlog, 300))  # drained to what is normally in flight
        _wait_js(broker, """() => [...document.querySelectorAll('#edges tbody tr')]
                 .some(r => r.cells[0].textContent === 'demo-gw'
                       && r.cells[3].textContent === 'active')""")
        agent.screenshot(path=shots / "agent-recovered.png", full_page=True)
    assert errors == []
    assert sorted(p.name for p in shots.glob("*.png")) == [
        "agent-live.png", "agent-recovered.png", "agent-stalled.png", "broker-live.png",
        "broker-silent.png"]


def _page(context: object, errors: list[str]) -> object:
    page = context.new_page()  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))

    def console(msg: object) -> None:
        text = msg.text  # type: ignore[attr-defined]
        # the dashboard's first poll, before the token is given, is answered 401
        if msg.type == "error" and "status of 401" not in text:  # type: ignore[attr-defined]
            errors.append(f"{page.url}: {text}")

    page.on("console", console)
    return page


def _commit(run: Pipeline, group: str, offset: int) -> None:
    """A consumer group at ``offset`` on partition 0: it lags behind from then on."""
    resp = httpx.post(f"{run.cloud_url}/v1/groups/{group}/commit", timeout=5,
                      headers={"Authorization": f"Bearer {run.read_token}"},
                      json={"offsets": [{"topic": "telemetry", "partition": 0,
                                         "offset": offset}]})
    assert resp.status_code == 200, resp.text


def _live_agent_page(page: object) -> None:
    """Rates above zero, the uplink connected, and charts that keep growing."""
    _wait_js(page, "() => parseFloat(document.getElementById('received-rate').textContent) > 0")
    _wait_js(page, "() => parseFloat(document.getElementById('sent-rate').textContent) > 0")
    _wait_js(page, "() => document.getElementById('uplink').textContent === 'connected'")
    assert "telemetry" in _text(page, "#streams")
    before = _points(page, "#chart-rates")
    _wait_js(page, "n => +document.getElementById('chart-rates').dataset.points > n + 1",
             before)
    acked = _stream_cell(page, "telemetry", 8)
    _wait_js(page, """([name, v]) => [...document.querySelectorAll('#streams tbody tr')]
             .some(r => r.cells[0].textContent === name && +r.cells[8].textContent > v)""",
             ["telemetry", acked])


def _stream_cell(page: object, stream: str, col: int) -> int:
    return int(page.evaluate(  # type: ignore[attr-defined]
        """([name, col]) => [...document.querySelectorAll('#streams tbody tr')]
           .find(r => r.cells[0].textContent === name).cells[col].textContent""",
        [stream, col]))


def _login_and_see_data(page: object, run: Pipeline) -> None:
    """The dashboard asks for a token, then shows the edge and growing end offsets."""
    _wait_js(page, "() => !document.getElementById('login-panel').classList.contains('hidden')")
    page.fill("#login input", run.read_token)  # type: ignore[attr-defined]
    page.click("#login button[type=submit]")  # type: ignore[attr-defined]
    _wait_js(page, "() => document.getElementById('login-panel').classList.contains('hidden')")
    _wait_js(page, """() => [...document.querySelectorAll('#edges tbody tr')]
             .some(r => r.cells[0].textContent === 'demo-gw'
                   && r.cells[3].textContent === 'active')""")
    _wait_js(page, "() => parseFloat(document.getElementById('total-rate').textContent) > 0")
    total = page.evaluate(  # type: ignore[attr-defined]
        """() => [...document.querySelectorAll('#partitions tbody tr')]
           .reduce((a, r) => a + parseInt(r.cells[3].textContent), 0)""")
    _wait_js(page, """n => [...document.querySelectorAll('#partitions tbody tr')]
             .reduce((a, r) => a + parseInt(r.cells[3].textContent), 0) > n""", total)
    before = _points(page, "#chart-ingest")
    _wait_js(page, "n => +document.getElementById('chart-ingest').dataset.points > n + 1",
             before)
