"""Shared by the browser tests: Debian's chromium driven by Playwright (headless, loopback)
and the Airflow UI's sign-in.

Selectors are roles, labels and text, as in Airflow's own UI end-to-end tests
(``airflow-core/src/airflow/ui/tests/e2e``); waits are on UI state, never on sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from crossborder.policy import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"
UI_TIMEOUT = 30_000  # ms, for one UI state (page loaded, drawer open, answer recorded)
VIEWPORT = {"width": 1800, "height": 900}

# Debian's chromium, installed by `make chromium` (Playwright downloads no browser). Without
# these flags it stalls here on sandboxing, the GPU and calls home.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless chromium for a test module (closed after it)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium")
    expect.set_options(timeout=UI_TIMEOUT)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def log_in(page: Page, user: str, password: str) -> None:
    """The simple auth manager's sign-in form, reached by opening the UI."""
    page.goto("/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Welcome")).to_be_visible()
