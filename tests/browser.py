"""A headless Chromium driven over the DevTools protocol (websocket-client, no browser download): open a page, click
at pixels or on elements by their text, type, evaluate JavaScript, take screenshots."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

FIND_BY_TEXT = """
(() => {
  const want = %s;
  const nodes = [...document.querySelectorAll('button, label, [role=option], span, div, p')];
  const hits = nodes.filter(n => n.offsetParent !== null && n.textContent.trim() === want);
  hits.sort((a, b) => a.querySelectorAll('*').length - b.querySelectorAll('*').length);
  if (!hits.length) return null;
  hits[0].scrollIntoView({block: 'center'});
  const r = hits[0].getBoundingClientRect();
  return [r.left + r.width / 2, r.top + r.height / 2];
})()
"""


class Browser:
    """One headless Chromium page."""

    def __init__(self, width: int = 1280, height: int = 800, timeout: float = 120.0) -> None:
        import websocket

        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed")
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-"))
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
             "--enable-unsafe-swiftshader", "--no-first-run", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.time() + timeout
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=30))
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
        self.next_id = 0
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def send(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def eval(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=float(x), y=float(y), button="left",
                      buttons=0 if kind == "mouseReleased" else 1, clickCount=1)
            time.sleep(0.05)

    def find_text(self, text: str) -> Optional[Tuple[float, float]]:
        return self.eval(FIND_BY_TEXT % json.dumps(text))

    def click_text(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while (where := self.find_text(text)) is None:
            if time.time() > deadline:
                raise TimeoutError(f"no element with text '{text}' on the page")
            time.sleep(0.5)
        self.click(*where)

    def type_text(self, text: str) -> None:
        self.send("Input.insertText", text=text)

    def screenshot(self) -> np.ndarray:
        from PIL import Image

        data = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)
