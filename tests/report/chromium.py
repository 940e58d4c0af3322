"""Open a page in headless Chromium and report what a person would see, with the standard library
only: Chromium's DevTools protocol over a minimal WebSocket client (RFC 6455, text frames).

    page = open_page(Path("report.html"), screenshot=Path("shot.png"))
    page.console_errors, page.requests, page.facts
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags the machine notes give for a closed network: no background fetches, no first-run UI.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-allow-origins=*"]
FACTS_JS = """JSON.stringify({
  title: document.title,
  h2: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
  tables: Array.from(document.querySelectorAll('table')).map(t => ({
    css: t.className, rows: t.rows.length,
    width: t.getBoundingClientRect().width, height: t.getBoundingClientRect().height})),
  images: Array.from(document.images).map(i => ({
    complete: i.complete, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
    width: i.getBoundingClientRect().width, height: i.getBoundingClientRect().height,
    src: i.src.slice(0, 30)})),
  scripts: document.scripts.length,
  text: document.body.innerText.length
})"""


class WebSocket:
    """Just enough of a WebSocket client for DevTools: masked text frames out, frames in."""

    def __init__(self, url: str, timeout: float):
        assert url.startswith("ws://")
        hostport, _, path = url[5:].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        status, _, self.buffer = head.partition(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n")[0]:
            raise ConnectionError(f"DevTools refused the WebSocket: {status[:200]!r}")

    def send(self, text: str) -> None:
        data = text.encode()
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + n.to_bytes(2, "big") if n < 65536 else
                                bytes([0x80 | 127]) + n.to_bytes(8, "big"))
        mask = os.urandom(4)
        key = (mask * (n // 4 + 1))[:n]
        body = (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big") if n else b""
        self.sock.sendall(head + mask + body)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._read(2), "big")
            elif n == 127:
                n = int.from_bytes(self._read(8), "big")
            payload = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 8:
                raise ConnectionError("DevTools closed the WebSocket")
            if opcode in (9, 10):  # ping / pong: not part of a message
                continue
            message += payload
            if b0 & 0x80:
                return message.decode()

    def close(self) -> None:
        self.sock.close()


@dataclass
class Page:
    facts: dict
    console_errors: list[str] = field(default_factory=list)  # console.error, exceptions, log errors
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    screenshot: Path | None = None


class DevTools:
    def __init__(self, ws: WebSocket):
        self.ws, self.next_id, self.events = ws, 0, []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > end:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.events.append(json.loads(self.ws.recv()))


def _port(profile: Path, proc: subprocess.Popen, timeout: float) -> int:
    port_file = profile / "DevToolsActivePort"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text().split()[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}: {proc.stderr.read()[-2000:]!r}")
        time.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port")


def _errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append("log: " + p["entry"].get("text", ""))
    return out


def _end_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue


def open_page(path: Path, *, screenshot: Path | None = None, width: int = 1400, height: int = 1000,
              timeout: float = 30.0) -> Page:
    # Chromium's helper processes (renderer, crash handler) can still be writing to the profile
    # when the browser process has exited: end the whole process group, and let a late file
    # left in the profile not fail the test.
    with tempfile.TemporaryDirectory(prefix="farm-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                                 f"--window-size={width},{height}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            port = _port(Path(profile), proc, timeout)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as r:
                targets = json.load(r)
            page = next(t for t in targets if t["type"] == "page")
            ws = WebSocket(page["webSocketDebuggerUrl"], timeout)
            try:
                cdp = DevTools(ws)
                for domain in ("Page", "Runtime", "Log", "Network"):
                    cdp.call(f"{domain}.enable")
                # The viewport exactly, whatever the headless window keeps for itself.
                cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                         deviceScaleFactor=1, mobile=False)
                cdp.call("Page.navigate", url=path.resolve().as_uri())
                cdp.wait_for("Page.loadEventFired", timeout)
                facts = json.loads(cdp.call("Runtime.evaluate", expression=FACTS_JS,
                                            returnByValue=True)["result"]["value"])
                if screenshot is not None:
                    shot = cdp.call("Page.captureScreenshot", format="png")
                    screenshot.write_bytes(base64.b64decode(shot["data"]))
                cdp.call("Runtime.evaluate", expression="1")  # drain events queued meanwhile
                requests = [e["params"]["request"]["url"] for e in cdp.events
                            if e.get("method") == "Network.requestWillBeSent"]
                return Page(facts=facts, console_errors=_errors(cdp.events), requests=requests,
                            screenshot=screenshot)
            finally:
                ws.close()
        finally:
            _end_group(proc)
