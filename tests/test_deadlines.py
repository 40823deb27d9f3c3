"""The deadline alert: a day's export not finished by the policy's export_time."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from conftest import CapturingChannels

from crossborder import ledger, steps
from crossborder.settings import Settings

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY = "2026-11-23"
UI = "http://127.0.0.1:8080"
ACTIVE = ("adas_events", "charging_sessions", "diagnostics", "production_quality",
          "vehicle_telemetry")  # fmt: skip


def _settings(tmp_path) -> Settings:
    return Settings(
        source_root=tmp_path / "source",
        staging_root=tmp_path / "staging",
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        us_bucket="us-landing",
        s3_client=lambda: None,
        alert_channels=CapturingChannels(),
    )


def _attempt(engine, dataset: str, day: str, state: str, error: str | None = None) -> None:
    attempt = ledger.begin_attempt(engine, dataset, day, f"scheduled__{dataset}")
    if state != "in_progress":
        ledger.update_attempt(engine, attempt, state=state, error=error)


def _check(cfg: Settings, hour: int, minute: int) -> list[dict]:
    now = datetime(2026, 11, 24, hour, minute, tzinfo=SHANGHAI)
    return steps.check_export_deadlines(cfg, UI, now=now)


def test_unfinished_exports_alert_once_after_the_export_time(tmp_path):
    cfg = _settings(tmp_path)
    engine = ledger.connect(cfg.ledger_url)
    _attempt(engine, "production_quality", DAY, "exported")
    _attempt(engine, "vehicle_telemetry", DAY, "in_progress")
    _attempt(engine, "charging_sessions", DAY, "failed", "upload_failed: S3 said 503")
    _attempt(engine, "adas_events", DAY, "awaiting_review")
    # diagnostics: no run reached the ledger; owner_profiles: a draft policy, never due

    found = _check(cfg, 2, 15)  # every policy's export_time is 02:00
    assert sorted((o["dataset"], o["state"]) for o in found) == [
        ("charging_sessions", "failed"),
        ("diagnostics", "not started"),
        ("vehicle_telemetry", "in_progress"),
    ]
    sent = {a.dataset: a for a in cfg.alert_channels.sent}
    assert set(sent) == {"charging_sessions", "diagnostics", "vehicle_telemetry"}
    failed = sent["charging_sessions"]
    assert (failed.kind, failed.day, failed.step) == ("export_overdue", DAY, "deadline")
    assert "due by 02:00 Shanghai time and is not finished: failed (upload_failed" in failed.cause
    assert failed.link == f"{UI}/dags/cn_export_charging_sessions/runs/scheduled__charging_sessions"
    assert sent["diagnostics"].link == f"{UI}/dags/cn_export_diagnostics"
    # recorded in the ledger, without creating an attempt for the day that never ran
    events = ledger.list_events(engine, "diagnostics", DAY)
    assert [e["detail"]["kind"] for e in events] == ["export_overdue"]
    assert ledger.latest_attempt(engine, "diagnostics", DAY) is None

    assert _check(cfg, 2, 30) == []  # once per dataset and day
    assert len(cfg.alert_channels.sent) == 3


def test_before_the_export_time_the_previous_day_is_checked(tmp_path):
    cfg = _settings(tmp_path)
    engine = ledger.connect(cfg.ledger_url)
    for dataset in ("production_quality", "vehicle_telemetry", "diagnostics"):
        _attempt(engine, dataset, "2026-11-22", "received")
    for dataset in ("adas_events", "charging_sessions"):
        _attempt(engine, dataset, "2026-11-22", "rejected")
    _attempt(engine, "vehicle_telemetry", DAY, "in_progress")  # today's run, not yet due

    assert _check(cfg, 1, 59) == []
    assert cfg.alert_channels.sent == []
    due = _check(cfg, 2, 0)  # from 02:00 the day itself is due: none has finished
    assert {(o["day"], o["dataset"]) for o in due} == {(DAY, d) for d in ACTIVE}
