"""The export dashboard reads the ledger right, on SQLite and PostgreSQL, and renders it safely.

The ledger is filled through ledger.py's own functions, as the export steps fill it.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from fastapi import Depends, HTTPException
from fastapi.testclient import TestClient

from crossborder import dashboard, ledger

DAY, EARLIER_DAY = "2026-11-24", "2026-11-23"
RUN = "scheduled__2026-11-24T18:00:00+00:00"
APPROVALS = [
    {"by": "li.wei", "at": "2026-11-25T01:00:00+00:00", "cac_reference": "CAC-SA-2026-000123"},
    {"by": "zhang.min", "at": "2026-11-25T02:00:00+00:00", "cac_reference": "CAC-SA-2026-000123"},
]
RECEIPT = {
    "receipt_version": 1,
    "dataset": "production_quality",
    "partition_date": DAY,
    "manifest_sha256": "ab" * 32,
    "received_at": "2026-11-25T03:00:00+00:00",
    "receiver": "us-receiver-1",
    "lake_path": "/lake/production_quality/dt=2026-11-24",
    "rows": 1200,
    "objects": [],
}


def _attempt(engine, dataset, day, run, **fields) -> int:
    attempt = ledger.begin_attempt(engine, dataset, day, run)
    ledger.update_attempt(engine, attempt, **fields)
    return attempt


@pytest.fixture
def filled(engine):
    """One Shanghai day of every kind of outcome, plus an earlier exported day."""
    # A failed first attempt, then an export the U.S. side received.
    _attempt(engine, "production_quality", DAY, "manual__1", state="failed", rows_in=1200,
             error="quality suite production_quality.raw failed: part-00000.parquet")  # fmt: skip
    received = _attempt(engine, "production_quality", DAY, RUN, state="exported",
                        route="cleared", rows_in=1200, rows_out=1200, objects=1,
                        manifest_uri="s3://us-landing/production_quality/dt=2026-11-24/manifest.json",
                        manifest_sha256="ab" * 32)  # fmt: skip
    ledger.update_attempt(engine, received, state="received", receipt=RECEIPT)
    # Held for review, its review run opened; and one whose review run has not opened yet.
    reasons = [{"rule": "camera_media", "text": "camera clips are important data"}]
    adas = _attempt(engine, "adas_events", DAY, RUN, state="awaiting_review",
                    route="cac_review", reasons=reasons, rows_in=600, rows_out=0)  # fmt: skip
    ledger.record_event(engine, "adas_events", DAY, "review_opened",
                        {"review_run_id": "manual__2026-11-25T01:00:00+00:00",
                         "triggered_by": "admin"}, adas)  # fmt: skip
    charging = [{"rule": "charging_network", "text": "charging-network data is important"}]
    _attempt(engine, "charging_sessions", DAY, RUN, state="awaiting_review",
             route="cac_review", reasons=charging)  # fmt: skip
    # Blocked; its reason carries markup, which must reach the page as text.
    blocked = [{"rule": "no_legal_route", "text": "<script>alert('x')</script> & raw PI"}]
    _attempt(engine, "owner_profiles", DAY, RUN, state="blocked", route="blocked",
             reasons=blocked, rows_in=300, rows_out=0)  # fmt: skip
    # An earlier day, reviewed and exported: the approvals are in the ledger.
    _attempt(engine, "adas_events", EARLIER_DAY, "scheduled__2026-11-23", state="exported",
             route="cac_review", rows_in=580, rows_out=575, approvals=APPROVALS,
             manifest_uri="s3://us-landing/adas_events/dt=2026-11-23/manifest.json")  # fmt: skip
    return engine


def _by_key(view):
    return {(p.dataset, p.day): p for p in view.partitions}


def test_latest_attempt_per_dataset_and_day_with_its_history(filled):
    view = dashboard.load(filled)
    rows = _by_key(view)
    assert [(p.day, p.dataset) for p in view.partitions] == [
        (DAY, "adas_events"),
        (DAY, "charging_sessions"),
        (DAY, "owner_profiles"),
        (DAY, "production_quality"),
        (EARLIER_DAY, "adas_events"),
    ]
    quality = rows[("production_quality", DAY)]
    assert (quality.latest.state, quality.latest.route, quality.latest.attempt) == (
        "received",
        "cleared",
        2,
    )
    assert (quality.latest.rows_in, quality.latest.rows_out) == (1200, 1200)
    assert quality.latest.receipt == RECEIPT
    assert [(e.attempt, e.state) for e in quality.earlier] == [(1, "failed")]
    assert quality.earlier[0].reasons == (
        "quality suite production_quality.raw failed: part-00000.parquet",
    )
    assert quality.run_url == (
        "/dags/cn_export_production_quality/runs/scheduled__2026-11-24T18%3A00%3A00%2B00%3A00"
    )
    reviewed = rows[("adas_events", EARLIER_DAY)]
    assert reviewed.latest.approvals == tuple(APPROVALS)
    assert reviewed.latest.manifest_uri.endswith("dt=2026-11-23/manifest.json")
    assert reviewed.earlier == ()
    assert rows[("adas_events", DAY)].latest.reasons == (
        "camera clips are important data [camera_media]",
    )
    assert view.datasets == (
        "adas_events",
        "charging_sessions",
        "owner_profiles",
        "production_quality",
    )


def test_counts_are_per_state_of_the_latest_attempts(filled):
    counts = dashboard.load(filled).counts
    assert list(counts) == list(ledger.STATES)
    assert counts == {
        "in_progress": 0,
        "exported": 1,
        "awaiting_review": 2,
        "rejected": 0,
        "blocked": 1,
        "failed": 0,  # the failed attempt was superseded
        "received": 1,
    }


def test_awaiting_review_links_to_the_review_run(filled):
    waiting = dashboard.load(filled).awaiting_review
    assert [(p.dataset, p.review_run_id) for p in waiting] == [
        ("adas_events", "manual__2026-11-25T01:00:00+00:00"),  # the run that opened
        ("charging_sessions", f"review__{RUN}"),  # the run the daily run triggers
    ]
    assert waiting[0].review_url == (
        "/dags/cn_cac_review/runs/manual__2026-11-25T01%3A00%3A00%2B00%3A00/required_actions"
    )
    assert all(p.review_url is None for p in dashboard.load(filled, state="blocked").partitions)


def test_filters_narrow_the_table_only(filled):
    view = dashboard.load(filled, state="awaiting_review")
    assert [p.dataset for p in view.partitions] == ["adas_events", "charging_sessions"]
    view = dashboard.load(filled, dataset="adas_events")
    assert [(p.day, p.latest.state) for p in view.partitions] == [
        (DAY, "awaiting_review"),
        (EARLIER_DAY, "exported"),
    ]
    view = dashboard.load(filled, state="blocked", dataset="adas_events")
    assert view.partitions == ()
    assert sum(view.counts.values()) == 5 and len(view.awaiting_review) == 2
    with pytest.raises(ValueError, match="unknown state 'shipped'"):
        dashboard.load(filled, state="shipped")


def test_the_table_is_cut_at_the_limit(filled):
    view = dashboard.load(filled, limit=2)
    assert [p.dataset for p in view.partitions] == ["adas_events", "charging_sessions"]
    assert view.truncated and not dashboard.load(filled).truncated
    assert len(view.awaiting_review) == 2


def test_an_empty_ledger(engine):
    view = dashboard.load(engine)
    assert (view.partitions, view.awaiting_review, sum(view.counts.values())) == ((), (), 0)
    assert "No partition in the ledger matches." in dashboard.render(view)


def test_the_page_shows_the_ledger_escaped(filled):
    page = dashboard.render(dashboard.load(filled))
    assert "<script>alert(" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; raw PI [no_legal_route]" in page
    assert "2 partitions awaiting CAC review" in page
    assert (
        'href="/dags/cn_cac_review/runs/manual__2026-11-25T01%3A00%3A00%2B00%3A00/'
        'required_actions">Review adas_events 2026-11-24</a>'
    ) in page
    fallback = f"/dags/cn_cac_review/runs/{quote('review__' + RUN, safe='')}/required_actions"
    assert f'href="{fallback}"' in page
    assert re.search(r"li\.wei:\s+CAC-SA-2026-000123", page)
    assert "received 2026-11-25T03:00:00+00:00" in page and "us-receiver-1" in page
    assert "1 earlier attempt</summary>" in page
    assert '<option value="blocked">blocked</option>' in page
    assert 'href="?state=awaiting_review"' in page


def test_the_app_serves_and_filters_the_page_behind_its_guard(filled):
    client = TestClient(dashboard.create_app(lambda: filled))
    page = client.get("/", params={"state": "blocked"})
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert '<option value="blocked" selected>' in page.text
    assert "owner_profiles" in page.text and "production_quality</td>" not in page.text
    assert client.get("/", params={"state": "shipped"}).status_code == 400

    def refuse() -> None:
        raise HTTPException(status_code=401, detail="Not authenticated")

    guarded = TestClient(dashboard.create_app(lambda: filled, dependencies=[Depends(refuse)]))
    assert guarded.get("/").status_code == 401
