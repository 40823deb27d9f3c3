"""The CAC review end to end through real Airflow: the daily run hands a partition over,
`airflow dags test cn_cac_review` waits at its gates, and two approvers answer them through
the REST API of an API server on loopback that shares the metadata database."""

from __future__ import annotations

import json
import time
import urllib.error
from datetime import date

import pytest
from airflow_api import answer, pending_gate, token
from review_runs import DATASET, RUN_TIMEOUT, daily_export, review_env, start_review, wait_for

from crossborder import landing, ledger, review
from crossborder.localenv import (
    US_BUCKET,
    LocalEnv,
    airflow,
    api_server,
    start_airflow,
    stop,
)

pytestmark = pytest.mark.airflow

LI, ZHANG, _CHEN = (a["id"] for a in review.load_config().approvers)
REF = "CAC-SA-2026-000123"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with review_env(tmp_path_factory.mktemp("review")) as local:
        yield local


@pytest.fixture(scope="module")
def api(env):
    with api_server(env, env.root / "logs" / "api-server.log") as extra:
        yield extra


def _tokens(env: LocalEnv, api: dict) -> dict[str, str]:
    base = api["AIRFLOW__API__BASE_URL"]
    return {name: token(base, name, password) for name, password in env.ui_users().items()}


def _keys(env: LocalEnv, day: date) -> list[str]:
    return landing.list_keys(env.s3_client(), US_BUCKET, landing.partition_prefix(DATASET, day))


def test_two_approvers_release_the_export_and_one_cannot_approve_twice(env, api):
    day = date(2026, 11, 23)
    export_run_id = daily_export(env, day)
    base, tokens = api["AIRFLOW__API__BASE_URL"], _tokens(env, api)
    run = start_review(env, api, day, export_run_id, "review-approve")
    try:
        first = pending_gate(base, tokens["admin"], "cn_cac_review", "first_approval", run)
        assert first["subject"].startswith(f"CAC review: {DATASET} {day}")
        assert "### Why review is needed" in first["body"] and "`clip_uri`" in first["body"]
        answer(base, tokens[LI], first, "Approve", {"cac_reference": REF, "reason": None})
        second = pending_gate(base, tokens["admin"], "cn_cac_review", "second_approval", run)
        assigned = {u["id"] for u in second["assigned_users"]}
        assert LI not in assigned and ZHANG in assigned
        with pytest.raises(urllib.error.HTTPError) as refused:  # four eyes in Airflow itself
            answer(base, tokens[LI], second, "Approve", {"cac_reference": REF, "reason": None})
        assert refused.value.code == 403
        answer(base, tokens[ZHANG], second, "Approve", {"cac_reference": REF, "reason": None})
        assert wait_for(run) == 0
    finally:
        stop(run)
    manifest = json.loads(
        landing.get_bytes(env.s3_client(), US_BUCKET, landing.manifest_key(DATASET, day))
    )
    assert manifest["route"] == "cac_review"
    assert [(a["by"], a["cac_reference"]) for a in manifest["approvals"]] == [
        (LI, REF),
        (ZHANG, REF),
    ]
    engine = ledger.connect(env.ledger_url)
    row = ledger.latest_attempt(engine, DATASET, day.isoformat())
    assert (row["state"], row["approvals"]) == ("exported", manifest["approvals"])
    assert any(k.endswith(".parquet.encrypted") for k in _keys(env, day))
    notices = [
        e["detail"]["cause"]
        for e in ledger.list_events(engine, DATASET, day.isoformat())
        if e["kind"] == "alert" and e["detail"]["kind"] == "review_gate_open"
    ]  # approvers were told, with the link to the gate in the UI
    assert len(notices) == 2
    assert f"{base}/dags/cn_cac_review/runs/" in notices[0]
    assert "/tasks/first_approval/required_actions" in notices[0]


def test_a_rejection_is_recorded_and_nothing_is_uploaded(env, api):
    day = date(2026, 11, 22)
    export_run_id = daily_export(env, day)
    base, tokens = api["AIRFLOW__API__BASE_URL"], _tokens(env, api)
    run = start_review(env, api, day, export_run_id, "review-reject")
    try:
        first = pending_gate(base, tokens["admin"], "cn_cac_review", "first_approval", run)
        params = {"cac_reference": REF, "reason": "camera clips show faces"}
        answer(base, tokens[ZHANG], first, "Reject", params)
        assert wait_for(run) == 0  # a rejection is an outcome, not a failure
    finally:
        stop(run)
    row = ledger.latest_attempt(ledger.connect(env.ledger_url), DATASET, day.isoformat())
    assert row["state"] == "rejected" and "camera clips show faces" in row["error"]
    assert _keys(env, day) == []


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory):
    """A second environment run by Airflow's own scheduler (LocalExecutor), with review
    gates that time out after 5 s: the scheduler enforces response timeouts."""
    root = tmp_path_factory.mktemp("scheduled")
    config = root / "cac_review.yaml"
    text = review.config_path().read_text(encoding="utf-8")
    config.write_text(text.replace("response_timeout: 7d", "response_timeout: 5s"))
    settings = {
        "CROSSBORDER_REVIEW_CONFIG": str(config),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    }
    with (
        review_env(root / "env", settings) as local,
        api_server(local, root / "logs" / "api-server.log", extra_env=settings) as extra,
    ):
        yield local, extra


def test_an_unanswered_review_times_out_as_a_rejection(scheduled):
    env, extra = scheduled
    day = date(2026, 11, 21)
    daily_export(env, day, extra_env=extra)
    logs = env.root / "logs"
    components = [
        start_airflow(env, "dag-processor", log=logs / "dag-processor.log", extra_env=extra),
        start_airflow(env, "scheduler", log=logs / "scheduler.log", extra_env=extra),
    ]
    try:
        # The daily run handed over: its queued review run starts once the DAG is unpaused.
        airflow(env, "dags", "unpause", "cn_cac_review", extra_env=extra)
        engine = ledger.connect(env.ledger_url)
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            row = ledger.latest_attempt(engine, DATASET, day.isoformat())
            if row["state"] != "awaiting_review":
                break
            time.sleep(2)
    finally:
        for process in components:
            stop(process)
    assert row["state"] == "rejected", row
    assert "timeout" in row["error"] and row["approvals"] == []
    kinds = [
        e["detail"]["kind"]
        for e in ledger.list_events(engine, DATASET, day.isoformat())
        if e["kind"] == "alert"
    ]
    assert "review_gate_open" in kinds and kinds[-1] == "review_timeout"
    assert _keys(env, day) == []
