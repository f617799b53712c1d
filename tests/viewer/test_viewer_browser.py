"""The play page in a real browser (headless Chromium through chromedriver): key presses advance the
world model, the frame changes, the page reports the action of the key and the agent's suggestion,
restarts and continuous play work. Skipped when no browser is installed; install it with
``apt-get install -y chromium chromium-driver`` (see tests/viewer/webdriver.py for other locations)."""

from __future__ import annotations

import threading

import pytest
from webdriver import Browser, find_browser

from dreamer.viewer.load import load_world
from dreamer.viewer.server import make_server, url_of
from dreamer.viewer.session import PlaySession

CHROMIUM, CHROMEDRIVER = find_browser()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no headless browser: apt-get install -y chromium chromium-driver (or set CHROMIUM / CHROMEDRIVER)")

STATE = "return [document.body.dataset.decision, document.getElementById('action').textContent, " \
        "document.getElementById('frame').src, document.getElementById('error').textContent]"


@pytest.fixture(scope="module")
def page(crafter_run, tmp_path_factory):
    server = make_server(PlaySession(load_world(crafter_run["phase2"], device="cpu")), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Browser(CHROMIUM, CHROMEDRIVER, tmp_path_factory.mktemp("chromium-profile")) as browser:
            browser.open(url_of(server))
            browser.wait_js("return document.body.dataset.ready === '1'", what="the page to load")
            yield browser
    finally:
        server.shutdown()
        server.server_close()


def test_keys_advance_the_dream_and_report_the_action(page):
    decision, action, frame, error = page.js(STATE)
    assert decision == "0" and action == "-" and frame.startswith("data:image/png;base64,") and not error
    assert page.js("return document.getElementById('frame').width") == 4 * 64  # 4x the frame size
    for i, (key, name) in enumerate([("a", "move_left"), ("arrowup", "move_up"), (" ", "do"), ("t", "place_table")]):
        page.press(key)
        page.wait_js(f"return document.body.dataset.decision === '{i + 1}'", what=f"decision {i + 1} after {key!r}")
        decision, action, new_frame, error = page.js(STATE)
        assert action == name and not error
        assert new_frame != frame
        frame = new_frame
    assert page.js("return document.getElementById('agent-action').textContent") not in ("", "-")
    assert float(page.js("return document.getElementById('mean-latency').textContent")) > 0
    page.press("z")  # not bound: no decision
    assert page.js(STATE)[0] == "4"


def test_restart_and_continuous_play(page):
    page.click("#restart-random")
    page.wait_js("return document.body.dataset.decision === '0'", what="the restart")
    page.js("document.getElementById('rate').value = '10'")
    page.click("#agent-drives")
    page.click("#run")
    page.wait_js("return Number(document.body.dataset.decision) >= 3", what="continuous decisions")
    page.click("#run")
    assert not page.js(STATE)[3]
