"""The staff console in a real browser: headless Chromium, driven over the DevTools protocol, against the app served
on a localhost port. Staff logs in, opens an objection, resolves it by correcting a field; the citizen's wallet then
holds the new version and the objection is resolved."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CIVIL_AFFAIRS
from tests.support import marriage_of, wallet
from tests.web.console_support import FAST_HASHER, PASSWORD, jpeg

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install "
                                                          "chromium fonts-noto-cjk; .ci/run installs both)")


@pytest.fixture
def app_settings() -> dict[str, Any]:
    return {"STAFF_PASSWORD_HASHER": FAST_HASHER}


class DevTools:
    """A minimal Chrome DevTools protocol client over one page target (websocket-client)."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # dev dependency: only this test needs it

        self.socket = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        ident = self.next_id
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == ident:
                assert "error" not in message, (method, message["error"])
                return dict(message.get("result", {}))
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, message in enumerate(self.events):
                if message.get("method") == event:
                    return dict(self.events.pop(index))
            self.events.append(json.loads(self.socket.recv()))
        raise AssertionError(f"no {event} within {timeout} s")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def load(self, action: str, **params: Any) -> None:
        """Run a navigation (Page.navigate, or a click given as JavaScript) and wait until the new page has loaded."""
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        if action == "navigate":
            self.call("Page.navigate", **params)
        else:
            self.evaluate(action)
        self.wait_for("Page.loadEventFired")

    def type_into(self, selector: str, text: str) -> None:
        """Clear a field and type text into it, as a keyboard would (Input.insertText)."""
        field = f"document.querySelector({json.dumps(selector)})"
        self.evaluate(f"(() => {{ const f = {field}; f.value = ''; f.focus(); }})()")
        self.call("Input.insertText", text=text)

    def text(self) -> str:
        return str(self.evaluate("document.body.innerText"))

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[DevTools]:
    assert CHROMIUM is not None
    profile = tmp_path / "profile"
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "--window-size=1280,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tools: DevTools | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, "Chromium exited before it opened its DevTools port"
            assert time.monotonic() < deadline, "Chromium opened no DevTools port within 60 s"
            time.sleep(0.1)  # waiting for an external process, not for the app's clock
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as answer:
            targets = json.load(answer)
        page = next(t for t in targets if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        tools.call("Page.enable")
        tools.call("Runtime.enable")
        yield tools
    finally:
        if tools is not None:
            tools.close()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def keep_screenshot(tools: DevTools, path: Path) -> bytes:
    import base64

    data = base64.b64decode(tools.call("Page.captureScreenshot", format="png")["data"])
    path.write_bytes(data)
    keep = os.environ.get("ECERT_SCREENSHOT_DIR")  # to look at it: ECERT_SCREENSHOT_DIR=/tmp/shots pytest …
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return data


def test_staff_resolves_an_objection_in_chromium_and_the_citizen_sees_the_correction(
        app, runner, live_server, chromium, login, make_dept_client, tmp_path):
    # A citizen holds a marriage certificate with the spouse's name wrong and files an objection with a photo.
    citizen = login("张伟")
    held = marriage_of(citizen, app, make_dept_client(CIVIL_AFFAIRS, scopes=("issue",)))
    filed = citizen.http.post("/api/v1/objections", headers=citizen.headers, content_type="multipart/form-data", data={
        "certificate_id": held.id, "disputed": json.dumps([{"field": "party_b_name", "claimed_value": "李 娜"}]),
        "description": "配偶姓名登记有误，应为“李 娜”。", "evidence": [(io.BytesIO(jpeg()), "photo.jpg")]})
    assert filed.status_code == 201, filed.get_json()
    objection_id = filed.get_json()["id"]
    # The civil affairs bureau's clerk gets an account from the operator's command line.
    added = runner.invoke(args=["staff", "add", "--dept", CIVIL_AFFAIRS, "--username", "li.clerk", "--name", "李文",
                                "--password-stdin"], input=PASSWORD + "\n")
    assert added.exit_code == 0, added.output

    # Login.
    chromium.load("navigate", url=f"{live_server}/console/login")
    assert "工作人员登录" in chromium.text()
    keep_screenshot(chromium, tmp_path / "console-login.png")
    chromium.type_into("#username", "li.clerk")
    chromium.type_into("#password", PASSWORD)
    chromium.load("document.querySelector('#login').click()")
    assert chromium.evaluate("location.pathname") == "/console/objections"
    queue = chromium.text()
    assert "信阳市民政局 · 异议队列" in queue and "结婚证" in queue and "待受理" in queue
    keep_screenshot(chromium, tmp_path / "console-queue.png")
    cookie_visible_to_scripts = chromium.evaluate("document.cookie")
    assert "ecert_console" not in cookie_visible_to_scripts  # HttpOnly

    # Open the objection from the queue; its evidence photo loads through the console's login.
    chromium.load(f"document.querySelector('a[href$=\"{objection_id}\"]').click()")
    detail = chromium.text()
    assert "有异议的字段" in detail and "李娜" in detail and "李 娜" in detail
    assert chromium.evaluate("Promise.all([...document.querySelectorAll('.evidence img')].map(i => i.decode()"
                             ".then(() => i.naturalWidth)))") == [64]

    # Resolve by correcting the field in the pre-filled form.
    chromium.load("document.querySelector('#resolve').click()")
    assert chromium.evaluate("document.querySelector('#field-party_b_name').value") == "李娜"
    chromium.type_into("#field-party_b_name", "李 娜")
    keep_screenshot(chromium, tmp_path / "console-correction.png")
    chromium.load("document.querySelector('#submit-correction').click()")
    assert chromium.evaluate("location.pathname") == f"/console/objections/{objection_id}"
    assert chromium.evaluate("document.querySelector('#status').innerText") == "已更正"
    corrected = chromium.evaluate("document.querySelector('#corrected').innerText")
    shot = keep_screenshot(chromium, tmp_path / "console-resolved.png")
    assert shot.startswith(b"\x89PNG")

    # The citizen's wallet holds the new version, with the corrected name, and the objection is resolved.
    items = wallet(citizen)["items"]
    assert [item["version"] for item in items] == [2]
    new = citizen.http.get(f"/api/v1/wallet/certificates/{items[0]['id']}", headers=citizen.headers).get_json()
    assert new["identifier"] in corrected and "李 娜" in json.dumps(new, ensure_ascii=False)
    followed = citizen.http.get(f"/api/v1/objections/{objection_id}", headers=citizen.headers).get_json()
    assert (followed["status"], followed["status_label"]) == ("resolved", "已更正")
    assert followed["corrected_certificate"]["id"] == items[0]["id"]
    assert [step["event"] for step in followed["timeline"]] == ["filed", "resolved"]
    inbox = citizen.http.get("/api/v1/notifications", headers=citizen.headers).get_json()["items"]
    resolved = [n for n in inbox if n["kind"] == "objection_resolved"]
    assert len(resolved) == 1 and "已更正" in resolved[0]["title"]
