"""The export dashboard in the Airflow UI, in a real browser, over a ledger the real DAGs wrote.

One Shanghai day of three datasets goes through the daily DAGs (``airflow dags test``, in
parallel): ``production_quality`` is cleared, exported, then received on the U.S. side and
reconciled; ``adas_events`` is held for CAC review and its review run waits at its first
gate; ``owner_profiles`` is blocked. An admin logs in
(Debian's chromium driven by Playwright, headless, on loopback), opens "Exports" from the
navigation, checks rows, counts, the awaiting-review list and the state filter, and
follows the links to an export run and to the review. The dashboard is saved to
``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import re
import time
from datetime import date, timedelta

import pytest
from browser import ARTIFACTS, VIEWPORT, chromium, log_in
from playwright.sync_api import BrowserContext, FrameLocator, Page, expect
from review_runs import review_env, start_review, wait_for

from crossborder import dashboard, ledger, receive, steps, synthetic
from crossborder.localenv import US_BUCKET, LocalEnv, api_server, start_airflow, stop
from crossborder.reports import report_url

pytestmark = pytest.mark.airflow

DAY = date(2026, 11, 24)
EXPECTED = {  # dataset: (route, state) after the day's runs
    "production_quality": ("cleared", "received"),
    "adas_events": ("cac_review", "awaiting_review"),
    "owner_profiles": ("blocked", "blocked"),
}
GATE_TIMEOUT = 240  # s, until the review run opens / its gate waits in the UI


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with review_env(tmp_path_factory.mktemp("dashboard-browser")) as local:
        yield local


@pytest.fixture(scope="module")
def exported(env: LocalEnv) -> dict[str, dict]:
    """The day through the daily DAGs, then the U.S. side; the ledger's latest attempts."""
    logical = f"{DAY + timedelta(days=1)}T02:00:00+08:00"
    runs = {}
    try:
        for dataset in EXPECTED:
            synthetic.generate_partition(env.source, dataset, DAY, rows=300)
            log = env.root / "logs" / f"cn_export_{dataset}.log"
            dag_id = f"cn_export_{dataset}"
            runs[dataset] = start_airflow(env, "dags", "test", dag_id, logical, log=log)
        codes = {dataset: wait_for(run) for dataset, run in runs.items()}
    finally:
        for run in runs.values():
            stop(run)
    assert codes == dict.fromkeys(EXPECTED, 0), f"daily runs failed; logs in {env.root / 'logs'}"
    # The U.S. side: what the tasks of us_receive and cn_reconcile_receipts call, called
    # here (their DAGs are tested end to end elsewhere; booting Airflow twice costs ~40 s).
    receive.receive_partition(env.s3_client(), US_BUCKET, "production_quality", DAY, env.lake,
                              env.key("us_recipient_private.pem"),
                              env.key("manifest_signing_public.pem"))  # fmt: skip
    assert [r["dataset"] for r in steps.reconcile_receipts(env.settings())] == [
        "production_quality"
    ]
    engine = ledger.connect(env.ledger_url)
    rows = {d: ledger.latest_attempt(engine, d, DAY.isoformat()) for d in EXPECTED}
    assert {d: (r["route"], r["state"]) for d, r in rows.items()} == EXPECTED
    return rows


@pytest.fixture(scope="module")
def api(env):
    with api_server(env, env.root / "logs" / "api-server.log") as extra:
        yield extra


@pytest.fixture(scope="module")
def review(env, api, exported):
    """The review run of the held partition, started and waiting; its run id and process."""
    export_run_id = exported["adas_events"]["dag_run_id"]
    run = start_review(env, api, DAY, export_run_id, "dashboard-review")
    try:
        yield _opened_review(env, run), run
    finally:
        stop(run, grace=3)  # waiting at a gate, it ignores SIGTERM


def _opened_review(env: LocalEnv, run) -> str:
    """The review run's id, once it has recorded in the ledger that it opened."""
    engine = ledger.connect(env.ledger_url)
    deadline = time.monotonic() + GATE_TIMEOUT
    while True:
        events = ledger.list_events(engine, "adas_events", DAY.isoformat())
        opened = [e["detail"]["review_run_id"] for e in events if e["kind"] == "review_opened"]
        if opened:
            return opened[-1]
        if run.poll() is not None:
            raise RuntimeError(f"the review run ended (exit {run.returncode}) before opening")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the review run did not open within {GATE_TIMEOUT} s")
        time.sleep(1)


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


# --- the page, as a data engineer uses it ------------------------------------------------


def _open_dashboard(page: Page) -> FrameLocator:
    """The dashboard from the UI's navigation; it shows in the UI's frame."""
    page.get_by_role("link", name="Exports").click()
    expect(page).to_have_url(re.compile(r"/plugin/export-dashboard"))
    frame = page.frame_locator('iframe[title="Exports"]')
    expect(frame.get_by_role("heading", name="Cross-border exports")).to_be_visible()
    return frame


def _row(frame: FrameLocator, dataset: str):
    table = frame.get_by_role("table", name="Exports")
    return table.get_by_role("row").filter(has=frame.get_by_role("cell", name=dataset, exact=True))


def _login_required(context: BrowserContext, exported: dict[str, dict]) -> None:
    """Without a login, the dashboard sends a browser to Airflow's login page and the
    quality reports answer 401."""
    page = context.request.get(
        f"{dashboard.URL_PREFIX}/", headers={"Accept": "text/html"}, max_redirects=0
    )
    assert page.status == 303, page.status
    assert page.headers["location"].startswith("/auth/login?next="), page.headers
    run_id = exported["production_quality"]["dag_run_id"]
    report = context.request.get(report_url("production_quality", run_id), max_redirects=0)
    assert report.status == 401, report.status


def _follow_to_gate(page: Page, frame: FrameLocator, review_run_id: str, run) -> None:
    """From the awaiting-review list to the review run's Required Actions in the UI, where
    its first gate waits (the run may still be on its way there: reload until it is)."""
    frame.get_by_role("link", name=f"Review adas_events {DAY}").click()
    expect(page).to_have_url(re.compile(re.escape(dashboard.review_url(review_run_id)) + "$"))
    dialog = page.get_by_role("dialog", name="Required Actions")
    deadline = time.monotonic() + GATE_TIMEOUT
    while True:
        try:
            expect(dialog).to_contain_text("first_approval", timeout=5_000)
            return
        except AssertionError:
            if run.poll() is not None:
                raise RuntimeError(f"the review run ended (exit {run.returncode})") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"no pending first_approval within {GATE_TIMEOUT} s") from None
            page.reload()


def test_the_dashboard_shows_the_ledger_in_the_airflow_ui(env, api, exported, review, browser,
                                                          capsys):  # fmt: skip
    review_run_id, review_process = review
    base = api["AIRFLOW__API__BASE_URL"]
    screen = ARTIFACTS / "dashboard.png"
    for stale in (screen, ARTIFACTS / "failed-dashboard.png"):
        stale.unlink(missing_ok=True)
    anonymous = browser.new_context(base_url=base)
    try:
        _login_required(anonymous, exported)
    finally:
        anonymous.close()

    context = browser.new_context(base_url=base, viewport=VIEWPORT)
    page = context.new_page()
    try:
        log_in(page, "admin", env.ui_users()["admin"])
        run_id = exported["production_quality"]["dag_run_id"]
        assert context.request.get(report_url("production_quality", run_id)).ok  # logged in
        frame = _open_dashboard(page)

        # One row per dataset and day, as the ledger holds it.
        for dataset, (route, state) in EXPECTED.items():
            found, row = exported[dataset], _row(frame, dataset)
            expect(row).to_have_count(1)
            for text in (str(DAY), route, state, f"{found['rows_in']:,}"):
                expect(row).to_contain_text(text)
            for reason in found["reasons"]:
                expect(row).to_contain_text(f"[{reason['rule']}]")
            link = row.get_by_role("link", name=found["dag_run_id"])
            href = dashboard.run_url(f"cn_export_{dataset}", found["dag_run_id"])
            expect(link).to_have_attribute("href", href)
        receipt = ledger.latest_attempt(ledger.connect(env.ledger_url), "production_quality",
                                        str(DAY))["receipt"]  # fmt: skip
        expect(_row(frame, "production_quality")).to_contain_text(
            f"received {receipt['received_at']}"
        )
        expect(_row(frame, "production_quality")).to_contain_text(f"{receipt['rows']} rows")

        # Counts per state, and the partition awaiting review with its link.
        counts = frame.get_by_role("list", name="Partitions per state")
        for label in ("all 3", "awaiting_review 1", "blocked 1", "received 1", "exported 0"):
            expect(counts.get_by_role("link", name=label, exact=True)).to_be_visible()
        waiting = frame.get_by_role("region", name="1 partition awaiting CAC review")
        expect(waiting.get_by_role("link", name=f"Review adas_events {DAY}")).to_have_attribute(
            "href", dashboard.review_url(review_run_id)
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=screen, full_page=True)

        # The state filter: only the blocked partition, and the UI's address says so.
        frame.get_by_label("State", exact=True).select_option("blocked")
        frame.get_by_role("button", name="Filter").click()
        expect(page).to_have_url(re.compile(r"/plugin/export-dashboard/.*\?state=blocked"))
        expect(frame.get_by_label("State", exact=True)).to_have_value("blocked")
        expect(frame.get_by_role("table", name="Exports").get_by_role("row")).to_have_count(2)
        expect(_row(frame, "owner_profiles")).to_contain_text("blocked")

        # A row's run link opens the export run in the UI itself.
        blocked_run = exported["owner_profiles"]["dag_run_id"]
        _row(frame, "owner_profiles").get_by_role("link", name=blocked_run).click()
        href = dashboard.run_url("cn_export_owner_profiles", blocked_run)
        expect(page).to_have_url(re.compile(re.escape(href) + "$"))
        expect(page.get_by_text(blocked_run, exact=True).first).to_be_visible()

        # The review link opens the review run's Required Actions, its gate waiting.
        _follow_to_gate(page, _open_dashboard(page), review_run_id, review_process)
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "failed-dashboard.png", full_page=True)
        raise
    finally:
        context.close()
    with capsys.disabled():
        print(f"\ndashboard: {screen}")
    assert screen.stat().st_size > 0
