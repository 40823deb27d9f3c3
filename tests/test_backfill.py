"""Backfill: export a range of past days with Airflow's own backfill, as README.md says.

Airflow's scheduler, dag-processor and API server run on loopback (LocalExecutor);
`airflow backfill create` asks for three days and each run exports the Shanghai day
before its logical date, one run after the other (the DAG's max_active_runs).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import date, timedelta

import pytest
from review_runs import review_env

from crossborder import ledger, synthetic
from crossborder.landing import manifest_key
from crossborder.localenv import US_BUCKET, airflow, api_server, start_airflow, stop

pytestmark = pytest.mark.airflow

DATASET = "production_quality"
DAYS = [date(2026, 11, 1) + timedelta(days=i) for i in range(3)]
TIMEOUT = 600.0  # s, for the whole range
SETTINGS = {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with review_env(tmp_path_factory.mktemp("backfill"), SETTINGS) as local:
        yield local


@contextmanager
def airflow_running(env):
    """API server, dag-processor and scheduler on loopback, stopped afterwards."""
    logs = env.root / "logs"
    with api_server(env, logs / "api-server.log", extra_env=SETTINGS) as extra:
        components = [
            start_airflow(env, "dag-processor", log=logs / "dag-processor.log", extra_env=extra),
            start_airflow(env, "scheduler", log=logs / "scheduler.log", extra_env=extra),
        ]
        try:
            yield
        finally:
            for process in components:
                stop(process)


def test_backfill_exports_every_day_of_the_range(env):
    for day in DAYS:
        synthetic.generate_partition(env.source, DATASET, day, rows=300)
    # Logical dates are the runs' 01:30 Shanghai starts on the mornings after each day.
    # (Created before the scheduler starts: SQLite takes one writer at a time.)
    first, last = DAYS[0] + timedelta(days=1), DAYS[-1] + timedelta(days=1)
    created = airflow(
        env, "backfill", "create", "--dag-id", f"cn_export_{DATASET}",
        "--from-date", f"{first}T00:00:00+08:00", "--to-date", f"{last}T23:59:00+08:00",
        extra_env=SETTINGS, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    # Backfill runs of a paused DAG wait; production DAGs are unpaused anyway.
    airflow(env, "dags", "unpause", f"cn_export_{DATASET}", extra_env=SETTINGS)

    engine = ledger.connect(env.ledger_url)
    with airflow_running(env):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            rows = [ledger.latest_attempt(engine, DATASET, day.isoformat()) for day in DAYS]
            if all(r and r["state"] in ("exported", "failed") for r in rows):
                break
            time.sleep(3)
    states = {day.isoformat(): r and r["state"] for day, r in zip(DAYS, rows, strict=True)}
    assert states == {day.isoformat(): "exported" for day in DAYS}, _tail(env)
    s3 = env.s3_client()
    for day in DAYS:
        s3.head_object(Bucket=US_BUCKET, Key=manifest_key(DATASET, day))
    # Each day was exported by a backfill run, not by hand.
    assert all(r["dag_run_id"].startswith("backfill__") for r in rows), [
        r["dag_run_id"] for r in rows
    ]


def _tail(env) -> str:
    log = env.root / "logs" / "scheduler.log"
    return log.read_text(errors="replace")[-3000:] if log.exists() else "no scheduler log"
