"""Alerts name dataset, day, step and a plain cause, and survive a broken configuration."""

from __future__ import annotations

import logging
from datetime import datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from conftest import CapturingChannels

from crossborder import alerts, ledger
from crossborder.errors import QualityFailed


class AirflowSensorTimeout(Exception):
    """Same name as Airflow's: describe() recognises the timeout by its type name."""


def test_causes_are_plain_words_by_error_type():
    quality = QualityFailed("suite x failed", dataset="d", day="2026-11-23")
    wrapped = RuntimeError("task failed")
    wrapped.__cause__ = quality
    assert alerts.describe(quality, "n/a") == ("quality_failed", "suite x failed")
    assert alerts.describe(wrapped, "n/a") == ("quality_failed", "suite x failed")
    assert alerts.describe(AirflowSensorTimeout("Sensor has timed out"), "no _SUCCESS in /x") == (
        "partition_late",
        "the partition did not arrive in time: no _SUCCESS in /x",
    )
    assert alerts.describe(ValueError("bad\\ntraceback"), "n/a") == (
        "task_failed",
        "ValueError: bad\\ntraceback",
    )


def test_alert_is_logged_and_recorded_and_fails_the_attempt(tmp_path, caplog):
    url = f"sqlite:///{tmp_path}/ledger.db"
    alert = alerts.Alert("diagnostics", "2026-11-23", "validate", "quality_failed", "x", "run-1")
    with caplog.at_level(logging.ERROR):
        alerts.emit(alert, url, fail_attempt=True)
    assert (
        "ALERT [quality_failed] diagnostics 2026-11-23 step validate: x "
        "(run run-1; runbook docs/runbook.md#quality_failed; task n/a)"
    ) in caplog.text
    engine = ledger.connect(url)
    [event] = ledger.list_events(engine, "diagnostics", "2026-11-23")
    assert (event["kind"], event["detail"]["step"]) == ("alert", "validate")
    row = ledger.latest_attempt(engine, "diagnostics", "2026-11-23")
    assert (row["state"], row["error"]) == ("failed", "quality_failed: x")


def test_failure_callback_still_alerts_when_configuration_is_broken(caplog, capsys, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_CN_SOURCE", raising=False)
    context = {
        "dag": SimpleNamespace(dag_id="cn_export_production_quality"),
        "params": {},
        "logical_date": datetime(2026, 11, 24, 2, tzinfo=ZoneInfo("Asia/Shanghai")),
        "task_instance": SimpleNamespace(task_id="extract"),
        "run_id": "scheduled__2026-11-23T18:00:00+00:00",
        "exception": QualityFailed("boom", dataset="production_quality", day="2026-11-23"),
    }
    with caplog.at_level(logging.ERROR):
        alerts.on_task_failure(context)
    logged = caplog.text + capsys.readouterr().out  # Airflow's logging setup prints to stdout
    assert "ALERT [quality_failed] production_quality 2026-11-23 step extract: boom" in logged


def test_a_failure_alert_never_overwrites_a_settled_outcome(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.db"
    engine = ledger.connect(url)
    attempt = ledger.begin_attempt(engine, "adas_events", "2026-11-23", "daily-1")
    ledger.update_attempt(engine, attempt, state="exported")
    # e.g. a review run opened again for a partition that has already left
    late = alerts.Alert(
        "adas_events", "2026-11-23", "open_review", "export_refused", "x", "daily-1"
    )
    alerts.emit(late, url, fail_attempt=True)
    assert ledger.get_attempt(engine, attempt)["state"] == "exported"
    events = ledger.list_events(engine, "adas_events", "2026-11-23")
    assert [e["detail"]["kind"] for e in events] == ["export_refused"]  # still alerted


def test_every_alert_kind_has_a_runbook_entry_with_what_to_do():
    import re

    from crossborder import errors
    from crossborder.policy import REPO_ROOT

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    kinds = {c.kind for c in subclasses(errors.CrossborderError)} | set(alerts.EVENT_KINDS)
    text = (REPO_ROOT / alerts.RUNBOOK).read_text(encoding="utf-8")
    entries = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, re.M | re.S))
    assert kinds <= set(entries), sorted(kinds - set(entries))
    for kind in kinds:
        assert "**Means**" in entries[kind] and "**Data left?**" in entries[kind], kind


def _error_types():
    from crossborder import errors

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    return sorted(subclasses(errors.CrossborderError), key=lambda c: c.kind)


@pytest.mark.parametrize("error_type", _error_types(), ids=lambda c: c.kind)
def test_each_error_type_gives_exactly_one_alert_with_every_field(error_type, caplog):
    from crossborder.notify import OnCallNotifier

    day = "2026-11-23"
    error = error_type("what went wrong\nwith more lines", dataset="diagnostics", day=day)
    failure = RuntimeError("wrapped by the no-retry failure")
    failure.__cause__ = error  # what call_failing_fast raises
    link = "http://127.0.0.1:8080/dags/cn_export_diagnostics/runs/scheduled__x/tasks/verify"
    instance = SimpleNamespace(task_id="verify", log_url=link)
    from airflow.sdk import DAG

    context = {
        "dag": DAG("cn_export_diagnostics", schedule=None),
        "params": {},
        # the run at 02:00 Shanghai on the 24th exports the Shanghai day before
        "logical_date": datetime(2026, 11, 23, 18, tzinfo=ZoneInfo("UTC")),
        "task_instance": instance,
        "ti": instance,
        "run_id": "scheduled__x",
        "exception": failure,
    }
    captured = CapturingChannels()
    with caplog.at_level(logging.ERROR):
        OnCallNotifier(channels=captured)(context)  # as Airflow calls it
    [alert] = captured.sent
    assert (alert.dataset, alert.day, alert.step) == ("diagnostics", day, "verify")
    assert (alert.kind, alert.run_id, alert.link) == (error_type.kind, "scheduled__x", link)
    assert alert.cause == "what went wrong"  # one line in plain words, never a stack trace
    assert "Traceback" not in alert.cause and "RuntimeError" not in alert.cause
    assert alert.runbook == f"docs/runbook.md#{error_type.kind}"
    assert caplog.text.count("ALERT [") == 1


def test_alert_text_names_every_field_on_its_own_line():
    from crossborder.notify import text

    alert = alerts.Alert(
        "diagnostics", "2026-11-23", "verify", "anonymization_residue",
        "column note: 3 phone numbers", "scheduled__x", "http://ui/dags/d/runs/r/tasks/verify",
    )  # fmt: skip
    assert text(alert).splitlines() == [
        "anonymization_residue: diagnostics, Shanghai day 2026-11-23, step verify",
        "column note: 3 phone numbers",
        "Runbook: docs/runbook.md#anonymization_residue",
        "Task: http://ui/dags/d/runs/r/tasks/verify (run scheduled__x)",
    ]


def test_a_broken_channel_does_not_lose_the_alert(tmp_path, caplog):
    class Down(CapturingChannels):
        def send(self, alert):
            raise ConnectionError("smtp down")

    url = f"sqlite:///{tmp_path}/ledger.db"
    alert = alerts.Alert("diagnostics", "2026-11-23", "validate", "quality_failed", "x", "run-1")
    with caplog.at_level(logging.ERROR):
        sent = alerts.emit(alert, url, channels=Down(link="http://ui/t"))
    assert sent.link == "http://ui/t"
    assert "could not send the alert" in caplog.text
    [event] = ledger.list_events(ledger.connect(url), "diagnostics", "2026-11-23")
    assert event["detail"]["link"] == "http://ui/t"
