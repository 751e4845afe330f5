"""The Prefect UI in a real browser: Debian's headless Chromium driven by Playwright.

Playwright is pointed at the system browser (``/usr/bin/chromium``, from the Debian package
``chromium``): no browser is downloaded. The UI is a single-page app, so every check waits on a
DOM condition under a deadline (Playwright's ``expect`` and locators), never on a sleep.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Page, ViewportSize, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# What works here as root on a closed network: without the background-networking flags the
# browser's own requests (updates, sync, field trials) are refused and slow every page down.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS_ENV = "VEZA_SCREENSHOTS_DIR"
"""Where screenshots go when set (``make screenshots``: docs/img); a tmp dir otherwise."""
DEADLINE_MS = 90_000
"""Every wait on the page: the UI's first load on a loaded machine has taken tens of seconds."""
VIEWPORT: ViewportSize = {"width": 1600, "height": 1000}
"""Wide enough for the deployments table to print each schedule in full."""


@dataclass
class PrefectUI:
    """A logged-in page of the Prefect UI (the default, V2 UI) and where screenshots go."""

    page: Page
    base_url: str
    screenshots: Path

    def open(self, path: str) -> Page:
        """Navigate to a UI path (e.g. ``/deployments``) and return the page."""
        self.page.goto(f"{self.base_url}{path}")
        return self.page

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        """Save the page (or only the viewport) as ``<name>.png`` in the screenshots folder."""
        path = self.screenshots / f"{name}.png"
        self.page.screenshot(path=path, full_page=full_page)
        return path


def screenshots_dir(default: Path) -> Path:
    """The screenshots folder: $VEZA_SCREENSHOTS_DIR when set, else ``default``."""
    chosen = Path(os.environ.get(SCREENSHOTS_ENV) or default)
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


@contextmanager
def prefect_ui(ui_url: str, auth_string: str, *, screenshots: Path) -> Iterator[PrefectUI]:
    """Start headless Chromium in a fresh profile and log in to the UI with the auth string.

    Args:
        ui_url: the server's UI root (``http://127.0.0.1:PORT``).
        auth_string: the server's ``user:password`` (its login form asks for it).
        screenshots: folder for :meth:`PrefectUI.screenshot`.

    Yields:
        The logged-in UI; the browser is closed on exit.
    """
    expect.set_options(timeout=DEADLINE_MS)
    with tempfile.TemporaryDirectory(prefix="veza-chromium-") as profile, \
            sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport=VIEWPORT,
        )
        try:
            context.set_default_timeout(DEADLINE_MS)
            page = context.pages[0] if context.pages else context.new_page()
            ui = PrefectUI(page, f"{ui_url}/v2", screenshots)
            ui.open("/login")
            page.get_by_placeholder("admin:pass").fill(auth_string)
            page.get_by_role("button", name="Login").click()
            page.wait_for_url(lambda url: "/login" not in url)
            yield ui
        finally:
            context.close()
