"""A minimal W3C WebDriver client over urllib (no Python package needed): enough to open a page in
headless Chromium through chromedriver, press keys with real input events, click, and read the DOM.

Install the browser (Debian / Ubuntu):  apt-get install -y chromium chromium-driver
Other locations: set CHROMIUM=/path/to/chrome and CHROMEDRIVER=/path/to/chromedriver.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
KEYS = {"arrowleft": "\ue012", "arrowup": "\ue013", "arrowright": "\ue014", "arrowdown": "\ue015", "shift": "\ue008",
        "tab": "\ue004"}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,900"]


def find_browser() -> tuple[str | None, str | None]:
    """(chromium, chromedriver) executables, from $CHROMIUM / $CHROMEDRIVER or PATH; None when absent."""
    def find(env: str, names: tuple[str, ...]) -> str | None:
        if os.environ.get(env):
            return os.environ[env] if Path(os.environ[env]).is_file() else None
        return next((p for p in map(shutil.which, names) if p), None)

    return (find("CHROMIUM", ("chromium", "chromium-browser", "google-chrome")),
            find("CHROMEDRIVER", ("chromedriver",)))


class Browser:
    """``with Browser(chromium, chromedriver, profile_dir) as b: b.open(url); b.press("a"); b.js("...")``"""

    def __init__(self, chromium: str, chromedriver: str, profile: Path, timeout: float = 60.0):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.driver = subprocess.Popen([chromedriver, f"--port={port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        self.session = None
        try:
            self._wait(lambda: self._call("GET", "/status").get("ready"), timeout, "chromedriver to start")
            caps = {"browserName": "chrome", "goog:chromeOptions": {
                "binary": chromium, "args": [*CHROMIUM_ARGS, f"--user-data-dir={profile}"]}}
            self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]
        except BaseException:
            self.close()
            raise

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"WebDriver {method} {path}: {e.code} {e.read()[:500]!r}") from e
        except urllib.error.URLError:
            return {}

    def _s(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    @staticmethod
    def _wait(cond, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = cond()
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"waited {timeout:.0f} s for {what}")

    def open(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    def js(self, script: str, *args):
        return self._s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_js(self, script: str, timeout: float = 60.0, what: str = ""):
        return self._wait(lambda: self.js(script), timeout, what or script)

    def click(self, css: str) -> None:
        el = self._s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]
        self._s("POST", f"/element/{el}/click", {})

    def press(self, key: str) -> None:
        """A real key press (keydown + keyup through the browser's input pipeline)."""
        k = KEYS.get(key, key)
        self._s("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": k}, {"type": "keyUp", "value": k}]}]})

    def close(self) -> None:
        if self.session:
            self._s("DELETE", "")
            self.session = None
        self.driver.terminate()
        try:
            self.driver.wait(10)
        except subprocess.TimeoutExpired:
            self.driver.kill()

    def __enter__(self):  # -> Browser
        return self

    def __exit__(self, *exc) -> None:
        self.close()
