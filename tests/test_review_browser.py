"""The CAC review as the approvers do it: in the Airflow UI, in a browser.

The daily run hands a partition over, `airflow dags test cn_cac_review` waits at its two
gates, and two approvers, each in their own browser session (Debian's chromium driven by
Playwright, headless, on loopback), log in, open the review from Browse → Required
Actions, read it, enter the CAC reference and approve. The export then completes. The
first review screen is saved to ``test-artifacts/review-screen.png``.

Selectors are roles, labels and text, and waits are on UI state (see ``browser.py``).
"""

from __future__ import annotations

import json
import re
import time
from datetime import date
from pathlib import Path

import pytest
from browser import ARTIFACTS, UI_TIMEOUT, VIEWPORT, chromium, log_in
from playwright.sync_api import Browser, Locator, Page, expect
from review_runs import DATASET, daily_export, review_env, start_review, wait_for

from crossborder import landing, ledger, review
from crossborder.localenv import US_BUCKET, api_server, stop

pytestmark = pytest.mark.airflow

LI, ZHANG, _CHEN = (a["id"] for a in review.load_config().approvers)
REF = "CAC-SA-2026-000123"
GATE_TIMEOUT = 240  # s, until a gate shows up under Required Actions


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with review_env(tmp_path_factory.mktemp("review-browser")) as local:
        yield local


@pytest.fixture(scope="module")
def api(env):
    with api_server(env, env.root / "logs" / "api-server.log") as extra:
        yield extra


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


# --- the UI, as an approver uses it -----------------------------------------------------


def _pending_review(page: Page, gate: str, day: date, run) -> Locator:
    """Browse → Required Actions, until the review's ``gate`` waits there; its row."""
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Required Actions").click()
    page.wait_for_url(re.compile(r"/required_actions$"))
    row = (
        page.get_by_role("row")
        .filter(has=page.get_by_role("link", name=gate, exact=True))
        .filter(has=page.get_by_role("link", name=f"CAC review: {DATASET} {day}"))
    )
    deadline = time.monotonic() + GATE_TIMEOUT
    while True:
        try:
            expect(row.filter(has_text="Approval Required")).to_be_visible(timeout=5_000)
            return row
        except AssertionError:
            if run.poll() is not None:
                raise RuntimeError(f"the run ended (exit {run.returncode}) before {gate}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"no pending {gate} within {GATE_TIMEOUT} s") from None
            page.reload()


def _save_full_screen(page: Page, drawer: Locator, path: Path) -> Path:
    """The whole screen with the whole drawer: the drawer scrolls inside, so grow the
    window by what its content overflows, then take a full-page screenshot."""
    overflow = drawer.evaluate(
        """drawer => Math.max(0, ...Array.from(drawer.querySelectorAll("*"))
            .filter(e => /auto|scroll/.test(getComputedStyle(e).overflowY))
            .map(e => e.scrollHeight - e.clientHeight))"""
    )
    page.set_viewport_size({**VIEWPORT, "height": VIEWPORT["height"] + overflow})
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=path, full_page=True)
    return path


def _approve(browser: Browser, base_url: str, user: str, password: str, gate: str, day: date,
             run, screenshot: Path | None = None) -> dict:  # fmt: skip
    """One approver's visit in a fresh browser session: log in, open the pending review
    from Required Actions, check what it shows, enter the reference, Approve. The answer
    Airflow recorded (the PATCH response)."""
    context = browser.new_context(base_url=base_url, viewport=VIEWPORT)
    context.set_default_timeout(UI_TIMEOUT)
    page = context.new_page()
    try:
        log_in(page, user, password)
        row = _pending_review(page, gate, day, run)
        row.get_by_role("button", name="Open Review Drawer").click()
        drawer = page.get_by_role("dialog", name="Required Actions")
        expect(drawer).to_contain_text(gate)
        # Subject and body (Markdown from the hand-over) as the approver reads them.
        expect(drawer).to_contain_text(f"CAC review: {DATASET} {day} (")
        expect(drawer.get_by_role("heading", name="Why review is needed")).to_be_visible()
        expect(drawer.get_by_role("cell", name="clip_uri")).to_be_visible()
        expect(drawer.get_by_role("heading", name="To approve")).to_be_visible()
        # Airflow's form does not tie the label to its input: find the field by its group.
        reference = (
            drawer.get_by_role("group")
            .filter(has_text="CAC reference (required to approve)")
            .get_by_role("textbox")
        )
        reference.fill(REF)
        expect(reference).to_have_value(REF)
        if screenshot:
            _save_full_screen(page, drawer, screenshot)
        approve = drawer.get_by_role("button", name="Approve", exact=True)
        expect(approve).to_be_enabled()
        with page.expect_response(
            lambda r: r.url.endswith("/hitlDetails") and r.request.method == "PATCH"
        ) as answered:
            approve.click()
        assert answered.value.ok, f"{answered.value.status} {answered.value.text()}"
        toast = page.get_by_role("status").filter(has_text=f"{gate} response successful")
        expect(toast).to_be_visible()
        expect(drawer).to_be_hidden()
        expect(row).to_contain_text(user)  # "Responded by"
        return answered.value.json()
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / f"failed-{gate}.png", full_page=True)
        raise
    finally:
        context.close()


def test_two_approvers_release_the_export_in_the_browser(env, api, browser, capsys):
    day = date(2026, 11, 24)
    export_run_id = daily_export(env, day)
    base, passwords = api["AIRFLOW__API__BASE_URL"], env.ui_users()
    screen = ARTIFACTS / "review-screen.png"
    for stale in (screen, *ARTIFACTS.glob("failed-*.png")):
        stale.unlink(missing_ok=True)
    run = start_review(env, api, day, export_run_id, "review-browser")
    try:
        first = _approve(browser, base, LI, passwords[LI], "first_approval", day, run, screen)
        second = _approve(browser, base, ZHANG, passwords[ZHANG], "second_approval", day, run)
        assert wait_for(run) == 0
    finally:
        stop(run)
    with capsys.disabled():
        print(f"\nreview screen: {screen}")
    assert screen.stat().st_size > 0
    for answer, user in ((first, LI), (second, ZHANG)):
        assert answer["responded_by"]["id"] == user
        assert (answer["chosen_options"], answer["params_input"]["cac_reference"]) == (
            ["Approve"],
            REF,
        )

    s3 = env.s3_client()
    manifest = json.loads(landing.get_bytes(s3, US_BUCKET, landing.manifest_key(DATASET, day)))
    assert manifest["route"] == "cac_review"
    assert [(a["by"], a["cac_reference"]) for a in manifest["approvals"]] == [
        (LI, REF),
        (ZHANG, REF),
    ]
    keys = landing.list_keys(s3, US_BUCKET, landing.partition_prefix(DATASET, day))
    assert any(k.endswith(".parquet.encrypted") for k in keys), keys
    row = ledger.latest_attempt(ledger.connect(env.ledger_url), DATASET, day.isoformat())
    assert (row["state"], row["approvals"]) == ("exported", manifest["approvals"])
