"""The export ledger works the same on SQLite and PostgreSQL."""

import pytest
import sqlalchemy as sa

from crossborder import ledger


def test_attempt_is_one_row_per_run_and_numbered_per_day(engine):
    first = ledger.begin_attempt(engine, "production_quality", "2026-11-23", "run-1")
    assert ledger.begin_attempt(engine, "production_quality", "2026-11-23", "run-1") == first
    second = ledger.begin_attempt(engine, "production_quality", "2026-11-23", "run-2")
    other_day = ledger.begin_attempt(engine, "production_quality", "2026-11-24", "run-2")
    assert ledger.get_attempt(engine, first)["attempt"] == 1
    assert ledger.get_attempt(engine, second)["attempt"] == 2
    assert ledger.get_attempt(engine, other_day)["attempt"] == 1
    assert ledger.latest_attempt(engine, "production_quality", "2026-11-23")["id"] == second


def test_final_state_sets_finished_at_and_keeps_fields(engine):
    attempt = ledger.begin_attempt(engine, "diagnostics", "2026-11-23", "run-1")
    ledger.update_attempt(engine, attempt, route="blocked", reasons=[{"rule": "r", "text": "t"}])
    assert ledger.get_attempt(engine, attempt)["finished_at"] is None
    ledger.update_attempt(engine, attempt, state="blocked", rows_out=0)
    row = ledger.get_attempt(engine, attempt)
    assert (row["state"], row["route"], row["rows_out"]) == ("blocked", "blocked", 0)
    assert row["reasons"] == [{"rule": "r", "text": "t"}]
    assert row["finished_at"] is not None


def test_unknown_state_or_field_is_refused(engine):
    attempt = ledger.begin_attempt(engine, "diagnostics", "2026-11-23", "run-1")
    with pytest.raises(ValueError, match="unknown ledger state"):
        ledger.update_attempt(engine, attempt, state="shipped")
    with pytest.raises(ValueError, match="unknown ledger fields"):
        ledger.update_attempt(engine, attempt, colour="red")


def test_events_are_appended_in_order(engine):
    attempt = ledger.begin_attempt(engine, "diagnostics", "2026-11-23", "run-1")
    ledger.record_event(engine, "diagnostics", "2026-11-23", "alert", {"n": 1}, attempt)
    ledger.record_event(engine, "diagnostics", "2026-11-23", "blocked", {"n": 2}, attempt)
    kinds = [
        (e["kind"], e["detail"]["n"])
        for e in ledger.list_events(engine, "diagnostics", "2026-11-23")
    ]
    assert kinds == [("alert", 1), ("blocked", 2)]


def test_exported_without_receipt_is_listed_for_reconciliation(engine):
    attempt = ledger.begin_attempt(engine, "production_quality", "2026-11-23", "run-1")
    ledger.update_attempt(engine, attempt, state="exported", manifest_sha256="ab" * 32)
    assert [r["id"] for r in ledger.exported_awaiting_receipt(engine)] == [attempt]
    ledger.update_attempt(engine, attempt, state="received", receipt={"ok": True})
    assert ledger.exported_awaiting_receipt(engine) == []


def test_a_superseded_export_is_not_awaited(engine):
    old = ledger.begin_attempt(engine, "production_quality", "2026-11-23", "run-1")
    ledger.update_attempt(engine, old, state="exported", manifest_sha256="ab" * 32)
    new = ledger.begin_attempt(engine, "production_quality", "2026-11-23", "run-2")
    ledger.update_attempt(engine, new, state="exported", manifest_sha256="cd" * 32)
    assert [r["id"] for r in ledger.exported_awaiting_receipt(engine)] == [new]


def test_ledger_url_from_the_airflow_connection():
    from types import SimpleNamespace

    from crossborder.airflow_glue import ledger_url

    def conn(conn_type, **fields):
        defaults = {"host": None, "login": None, "password": None, "port": None, "schema": None}
        return SimpleNamespace(conn_type=conn_type, extra_dejson={}, **{**defaults, **fields})

    assert ledger_url(conn("sqlite", host="/var/lib/ledger.db")) == "sqlite:////var/lib/ledger.db"
    pg = conn(
        "postgres", host="db", login="exporter", password="s3cret", port=5432, schema="ledger"
    )
    assert ledger_url(pg) == "postgresql+psycopg2://exporter:s3cret@db:5432/ledger"
    with pytest.raises(ValueError, match="unsupported connection type 'mysql'"):
        ledger_url(conn("mysql"))


def test_concurrent_attempts_for_one_day_get_distinct_numbers(engine):
    from concurrent.futures import ThreadPoolExecutor

    runs = [f"run-{i}" for i in range(8)] * 2  # each run twice, all at once
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda r: ledger.begin_attempt(engine, "d", "2026-11-23", r), runs))
    assert ids[:8] == ids[8:]
    numbers = sorted(ledger.get_attempt(engine, i)["attempt"] for i in set(ids))
    assert numbers == list(range(1, 9))


def test_an_older_ledger_gets_new_columns_and_a_racing_worker_is_tolerated(engine, monkeypatch):
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE export_attempts DROP COLUMN anonymization"))
    ledger._add_missing_columns(engine)  # what connect() does for a ledger made before
    assert "anonymization" in ledger._column_names(engine, "export_attempts")
    # another worker added the column between our look and our ALTER TABLE: our looks
    # up to that column are stale, the look after the failed ALTER TABLE is not
    real = ledger._column_names
    stale_looks = [c.name for c in ledger.attempts.columns].index("anonymization") + 1
    looks = []

    def look(engine, table):
        if table != "export_attempts":
            return real(engine, table)
        looks.append(table)
        names = real(engine, table)
        return names - {"anonymization"} if len(looks) <= stale_looks else names

    monkeypatch.setattr(ledger, "_column_names", look)
    ledger._add_missing_columns(engine)  # the duplicate column error is absorbed
    # one look per column, plus the look again after the failed ALTER TABLE
    assert len(looks) == len(ledger.attempts.columns) + 1
    attempt = ledger.begin_attempt(engine, "diagnostics", "2026-11-23", "run-1")
    ledger.update_attempt(engine, attempt, anonymization={"verification": {"status": "passed"}})
    assert (
        ledger.get_attempt(engine, attempt)["anonymization"]["verification"]["status"] == "passed"
    )
