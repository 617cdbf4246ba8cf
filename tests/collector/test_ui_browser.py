"""Hostile URLs in a real headless Chromium: shown as text, never executed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from boundary_audit.collector import AppSettings, CollectorServer, Storage, open_storage
from boundary_audit.wire import IngestRequest

from .helpers import add_record, make_request, post_ingest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAYLOADS = [
    "https://evil.test/<script>window.__pwned=1;alert('script')</script>",
    'https://evil.test/"onerror="window.__pwned=2;alert(2)"<img src=x onerror=alert(3)>',
    "https://evil.test/</td></tr></table><svg onload=alert(4)>",
    "javascript:alert(5)",
]


@pytest.fixture
def ui_storage(tmp_path: Path) -> Iterator[Storage]:
    with open_storage(f"sqlite:///{tmp_path / 'ui.db'}") as storage:
        yield storage


def test_hostile_values_render_as_text(ui_storage: Storage) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (scripts/system-deps.sh installs chromium)")
    from playwright.sync_api import ConsoleMessage, Dialog, Error, sync_playwright

    token = ui_storage.create_token('agent"<b>bold</b>', "<i>ws</i>")
    sid = str(uuid.uuid4())
    with CollectorServer(ui_storage, AppSettings(require_read_auth=False)) as server:
        for i, payload in enumerate(PAYLOADS):
            request = make_request(sid, [i], url=payload, process="<script>alert(6)</script>")
            request.logs[0].logs[0].http_request.matched_rule = "<img src=x onerror=alert(7)>"
            request.logs[0].logs[0].allowed = True
            assert post_ingest(server.url, token, request).status_code == 200
        # Sealed with more events made than stored: the UI must say so.
        sealed = IngestRequest()
        add_record(sealed, sid, opened=True, seal={"events_made": 6, "undelivered": 2})
        assert post_ingest(server.url, token, sealed).status_code == 200
        dialogs: list[str] = []
        errors: list[str] = []

        def on_dialog(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        def on_error(error: Error) -> None:
            errors.append(str(error))

        def on_console(message: ConsoleMessage) -> None:
            # An injected script blocked by the CSP would show up here.
            if message.type in ("error", "warning"):
                errors.append(message.text)

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.on("dialog", on_dialog)
                page.on("pageerror", on_error)
                page.on("console", on_console)
                page.goto(server.url + "/")
                assert page.locator("#sessions tbody td").nth(1).inner_text() == (
                    'agent"<b>bold</b>'
                )
                assert page.locator("#sessions tbody td").nth(3).inner_text() == (
                    "<script>alert(6)</script>"
                )
                assert page.locator("#sessions td.completeness").inner_text() == (
                    "incomplete (2 unaccounted)"
                )
                # Sealed without a chain (the sender does not chain).
                assert page.locator("#sessions td.chain").inner_text() == "unverified"
                page.click(f"a[href='/sessions/{sid}']")
                page.wait_for_selector("#events")
                assert page.locator("#completeness").inner_text() == (
                    "incomplete: 2 of 6 unaccounted for (undelivered 2), 4 stored"
                )
                assert page.locator("#chain").inner_text() == (
                    "unverified: the sender does not chain"
                )
                urls = page.locator("#events td.url").all_inner_texts()
                assert urls == PAYLOADS
                rules = set(page.locator("#events tbody td:nth-child(7)").all_inner_texts())
                assert rules == {"<img src=x onerror=alert(7)>"}
                # A filter value echoed into the form stays a value.
                page.goto(
                    f"{server.url}/sessions/{sid}?q="
                    + httpx.QueryParams({"x": '"><script>alert(8)</script>'})["x"]
                )
                assert page.input_value("input[name=q]") == '"><script>alert(8)</script>'
                assert page.locator("img").count() == 0
                assert page.locator("svg[onload]").count() == 0
                assert page.evaluate("window.__pwned === undefined")
            finally:
                browser.close()
        assert dialogs == []
        assert errors == []
