"""A headless Chromium driven over the DevTools protocol (websocket-client): open a page, record
console messages, exceptions and HTTP answers, evaluate JS, take a screenshot. Also
`igneous-like view` as a subprocess and a wait for Neuroglancer's layers to load, shared by
the browser tests (test_view.py, test_stats.py)."""
from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         # WebGL on the CPU: Neuroglancer draws nothing without it
         "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--window-size=1000,700"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, port: int):
        self.port = port
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.proc = subprocess.Popen(
            [chromium_path(), *FLAGS, f"--user-data-dir={self.profile}", f"--remote-debugging-port={port}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.console: list[str] = []
        self.exceptions: list[str] = []
        self.responses: list[tuple[int, str]] = []
        self.failed: list[str] = []
        self._id = 0
        self.ws = self._connect()

    def _connect(self):
        import websocket

        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                if pages:
                    return websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30,
                                                       suppress_origin=True)
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("chromium's DevTools endpoint did not come up")
            time.sleep(0.2)

    def __enter__(self) -> "Browser":
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable")
        return self

    def __exit__(self, *exc) -> None:
        self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def call(self, method: str, **params) -> dict:
        self._id += 1
        my_id = self._id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._record(msg)

    def _record(self, msg: dict) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"{params.get('type')}: {text}")
        elif method == "Log.entryAdded":
            self.console.append(f"{params['entry']['level']}: {params['entry'].get('text', '')}")
        elif method == "Runtime.exceptionThrown":
            self.exceptions.append(json.dumps(params.get("exceptionDetails", {}))[:500])
        elif method == "Network.responseReceived":
            self.responses.append((params["response"]["status"], params["response"]["url"]))
        elif method == "Network.loadingFailed":
            self.failed.append(params.get("errorText", ""))

    def pump(self, seconds: float) -> None:
        """Record events for a while."""
        deadline = time.time() + seconds
        self.ws.settimeout(0.2)
        while time.time() < deadline:
            try:
                self._record(json.loads(self.ws.recv()))
            except Exception:  # websocket timeout: nothing arrived
                pass
        self.ws.settimeout(30)

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return res.get("result", {}).get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


class View:
    """`igneous-like view ...` as a subprocess: its URL, its messages, and a clean stop."""

    def __init__(self, *args: str, env: dict | None = None):
        import os

        self.proc = subprocess.Popen([sys.executable, "-m", "igneous_like", "view", "--no-browser", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.proc.kill()
            raise AssertionError(f"no URL from view: {self.url!r} {self.proc.stderr.read()}")

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: the exit code and everything it wrote to stderr."""
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=20)
        return self.proc.returncode, err


LAYER_STATES = """JSON.stringify(viewer.layerManager.managedLayers.map(m => ({
  name: m.name, type: m.layer && m.layer.type,
  sources: m.layer ? m.layer.dataSources.map(d => {
    const s = d.loadState;
    if (s === undefined) return 'loading';
    if (s.error !== undefined) return 'error: ' + s.error.message;
    return 'ok: ' + s.subsources.map(x => x.subsourceEntry.id).join(',');
  }) : []})))"""


def wait_loaded(browser: Browser, names: int, timeout: float = 30) -> list[dict]:
    deadline = time.time() + timeout
    while True:
        browser.pump(1)
        states = json.loads(browser.evaluate(LAYER_STATES) or "[]")
        done = len(states) == names and all(s["sources"] and "loading" not in s["sources"] for s in states)
        if done or time.time() > deadline:
            return states
