"""The web UI in real Chromium at 1400 and 400 px: key columns stay, nothing scrolls sideways.

Screenshots of the sessions list and of a realistic session (several hosts,
denials, 1200 events over 45 minutes, a 400-character URL) are written
outside the repository, to ``$BOUNDARY_AUDIT_ARTEFACTS`` (default
``/tmp/boundary-audit-artefacts``), for people to look at.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from boundary_audit.collector import AppSettings, CollectorServer, open_storage

from .test_ui_browser import CHROMIUM, CHROMIUM_ARGS
from .uidata import DENIED_HOSTS, EVENTS, seed_realistic

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
ARTEFACTS_ENV = "BOUNDARY_AUDIT_ARTEFACTS"
DEFAULT_ARTEFACTS = Path("/tmp/boundary-audit-artefacts")
#: A desktop window and a phone held upright.
WIDE_PX = 1400
NARROW_PX = 400
#: Tall enough for the session facts and the top of the tables in one screen.
VIEWPORT_HEIGHT_PX = 900


def _artefacts() -> Path:
    out = Path(os.environ.get(ARTEFACTS_ENV) or DEFAULT_ARTEFACTS)
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[CollectorServer, dict[str, str]]]:
    with (
        open_storage(f"sqlite:///{tmp_path / 'ui.db'}") as storage,
        CollectorServer(storage, AppSettings(require_read_auth=False)) as srv,
    ):
        yield srv, seed_realistic(srv.url, storage)


def _no_sideways_scroll(page: Any) -> None:
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"page scrolls sideways: {widths}"


def _shoot(page: Any, out: Path, name: str) -> None:
    """The first screen as people see it, and the whole page beside it."""
    page.screenshot(path=str(out / f"{name}.png"))
    page.screenshot(path=str(out / f"{name}-full.png"), full_page=True)


def _visible_headers(page: Any, table: str) -> list[str]:
    headers: list[str] = page.locator(f"#{table} thead th").evaluate_all(
        "ths => ths.filter(th => th.offsetParent !== null).map(th => th.innerText)"
    )
    return headers


def test_screens_at_both_widths(server: tuple[CollectorServer, dict[str, str]]) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (scripts/system-deps.sh installs chromium)")
    from playwright.sync_api import FloatRect, sync_playwright

    srv, ids = server
    out = _artefacts()
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for width in (WIDE_PX, NARROW_PX):
                page = browser.new_page(viewport={"width": width, "height": VIEWPORT_HEIGHT_PX})
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.goto(srv.url + "/")
                page.wait_for_selector("#sessions")
                _no_sideways_scroll(page)
                headers = _visible_headers(page, "sessions")
                assert {"Session", "Denied", "Completeness"} <= set(headers)
                _shoot(page, out, f"sessions-{width}")

                page.goto(f"{srv.url}/sessions/{ids['big']}")
                page.wait_for_selector("#events")
                _no_sideways_scroll(page)
                assert {"#", "Time", "Decision", "URL"} <= set(_visible_headers(page, "events"))
                assert {"Host", "Denied"} <= set(_visible_headers(page, "hosts"))
                assert page.locator("#event-count").inner_text().endswith(f"of {EVENTS} events")
                first_hosts = page.locator("#hosts td.host").all_inner_texts()[:2]
                assert set(first_hosts) == set(DENIED_HOSTS)
                # The long URL wraps in its cell instead of widening the page.
                page.goto(f"{srv.url}/sessions/{ids['big']}?decision=denied")
                _no_sideways_scroll(page)
                _shoot(page, out, f"session-{width}")
                # The events table's first screen, long URL included (#503).
                box = page.locator("#event-count").bounding_box()
                assert box is not None
                clip = FloatRect(x=0, y=box["y"], width=width, height=VIEWPORT_HEIGHT_PX)
                page.screenshot(
                    path=str(out / f"session-events-{width}.png"), full_page=True, clip=clip
                )
                page.goto(f"{srv.url}/?denied=1")
                _no_sideways_scroll(page)
                page.close()
        finally:
            browser.close()
    assert errors == []
    for name in ("sessions", "session"):
        for width in (WIDE_PX, NARROW_PX):
            assert (out / f"{name}-{width}.png").stat().st_size > 0
