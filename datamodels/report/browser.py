"""Open a report page in headless Chromium and say what a reader would meet: load time, console
errors, broken images and links, requests off the machine, the numbers shown, a screenshot.

Speaks the Chrome DevTools protocol over a websocket (``websocket-client``, in the ``test``
extra) to Debian's ``chromium``; used by tests/test_report_page.py and to measure the demo's page.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-allow-origins=*",
         "--remote-debugging-port=0")


def find_chromium() -> str | None:
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """A headless Chromium with one page, driven over CDP. Use as a context manager."""

    def __init__(self, binary: str | None = None, width: int = 1400, height: int = 1000, timeout: float = 30.0):
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise RuntimeError(f"no Chromium found (looked for {', '.join(BINARIES)})")
        self.width, self.height, self.timeout = width, height, timeout
        self.events: list[dict] = []
        self._id = 0

    def __enter__(self) -> "Chromium":
        import websocket

        self.profile = tempfile.mkdtemp(prefix="datamodels-chromium-")
        self.log = open(Path(self.profile) / "stderr.log", "w")
        self.proc = subprocess.Popen([self.binary, *FLAGS, f"--user-data-dir={self.profile}",
                                      f"--window-size={self.width},{self.height}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True)
        # Chromium writes the port it chose here once it listens
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"chromium did not start: {(Path(self.profile) / 'stderr.log').read_text()[-500:]}")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("chromium opened no page")
            time.sleep(0.05)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=self.timeout,
                                              suppress_origin=True, enable_multithread=False)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the renderer and helpers go too
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    # ------------------------------------------------------------------ protocol
    def _recv(self) -> dict:
        return json.loads(self.ws.recv())

    def call(self, method: str, **params) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._id += 1
        my = self._id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = self._recv()
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str) -> dict:
        for e in self.events:
            if e["method"] == method:
                return e
        while True:
            msg = self._recv()
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return msg

    def js(self, expression: str):
        """The value of a JavaScript expression on the page (JSON-able); an exception is raised here."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:60]}: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    # ------------------------------------------------------------------ a page
    def open(self, path) -> float:
        """Load a local file; returns the seconds from navigation to the load event (scripts run by then)."""
        self.events.clear()
        t0 = time.perf_counter()
        self.call("Page.navigate", url=Path(path).resolve().as_uri())
        self.wait_event("Page.loadEventFired")
        return time.perf_counter() - t0

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions, failed loads and requests that leave the machine."""
        out = []
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Network.loadingFailed":
                out.append(f"failed load: {p.get('errorText')}")
            elif m == "Network.requestWillBeSent" and not p["request"]["url"].startswith(("file:", "data:")):
                out.append(f"network request: {p['request']['url']}")
        return out

    def broken_images(self) -> list[str]:
        """Images that do not decode, once every image on the page has finished loading."""
        return self.js("Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))"
                       ".then(() => Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                       ".map(i => i.alt || i.src.slice(0, 80)))")

    def broken_links(self, page_dir) -> list[str]:
        """Links to an anchor that is not on the page, to a file not beside it, or off the machine."""
        bad = []
        for href in self.js("Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))"):
            if href.startswith("#"):
                if not self.js(f"document.getElementById({json.dumps(href[1:])}) !== null"):
                    bad.append(href)
            elif "://" in href or href.startswith("//") or not (Path(page_dir) / href).exists():
                bad.append(href)
        return bad

    def screenshot(self, path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)


def check_report(page, screenshot=None, walk: bool = True, **kw) -> dict:
    """Open a report's index.html and return what a reader meets.

    {"load_s", "bytes", "errors", "broken_images", "broken_links", "images", "pages",
    "values": [[data-key, text], ...]}; walk: page through the whole targets table, checking
    each page's images; screenshot: a PNG of the top of the page (first table page).
    """
    page = Path(page)
    with Chromium(**kw) as b:
        load_s = b.open(page)
        broken = list(b.broken_images())
        n_pages = b.js("window.reportPages ? window.reportPages() : 1")
        images = b.js("document.images.length")
        if walk:
            for p in range(1, n_pages):
                b.js(f"window.reportGoto({p})")
                broken += [f"page {p + 1}: {x}" for x in b.broken_images()]
                images += b.js("document.querySelectorAll('#targets img').length")
            b.js("window.reportGoto && window.reportGoto(0)")
        out = {"load_s": round(load_s, 3), "bytes": page.stat().st_size, "errors": b.errors(),
               "broken_images": broken, "broken_links": b.broken_links(page.parent), "images": images,
               "pages": n_pages,
               "values": b.js("Array.from(document.querySelectorAll('[data-key]')).map(e => [e.dataset.key, e.textContent])")}
        if screenshot is not None:
            b.screenshot(screenshot)
    return out
