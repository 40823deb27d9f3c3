"""Shared by the review tests that run real Airflow: an environment with its own S3
stand-in and metadata database, the daily export that hands a partition over, and the
review run waiting at its gates."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from subprocess import Popen

from crossborder import ledger, synthetic
from crossborder.localenv import (
    LocalEnv,
    airflow,
    migrate_airflow_db,
    start_airflow,
    start_s3_server,
    stop,
)

DATASET = "adas_events"  # important data: always reviewed
RUN_TIMEOUT = 300.0


@contextmanager
def airflow_env(root: Path) -> Iterator[LocalEnv]:
    """A prepared environment with its Airflow metadata database and an S3 API."""
    server, endpoint = start_s3_server()
    try:
        local = LocalEnv(root, endpoint)
        local.prepare()
        migrate_airflow_db(local)
        yield local
    finally:
        server.stop()


@contextmanager
def review_env(root: Path, settings: dict[str, str] | None = None) -> Iterator[LocalEnv]:
    """A prepared environment whose metadata database knows every DAG (the daily run
    triggers ``cn_cac_review`` by id)."""
    with airflow_env(root) as local:
        airflow(local, "dags", "reserialize", extra_env=settings)
        yield local


def daily_export(env: LocalEnv, day: date, extra_env: dict[str, str] | None = None) -> str:
    """Export ``day`` with the daily DAG; it ends green, held for review. Its run id."""
    synthetic.generate_partition(env.source, DATASET, day, rows=600)
    logical = f"{day + timedelta(days=1)}T02:00:00+08:00"
    result = airflow(
        env, "dags", "test", f"cn_export_{DATASET}", logical, check=False, extra_env=extra_env
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    row = ledger.latest_attempt(ledger.connect(env.ledger_url), DATASET, day.isoformat())
    assert (row["state"], row["route"]) == ("awaiting_review", "cac_review")
    return row["dag_run_id"]


def start_review(env: LocalEnv, api: dict, day: date, export_run_id: str, name: str) -> Popen:
    """``airflow dags test cn_cac_review`` in the background, sharing the API server's
    database: it waits at each gate until someone answers."""
    conf = {"dataset": DATASET, "partition_date": day.isoformat(), "export_run_id": export_run_id}
    return start_airflow(
        env,
        "dags", "test", "cn_cac_review", "-c", json.dumps(conf),
        log=env.root / "logs" / f"{name}.log",
        extra_env=api,
    )  # fmt: skip


def wait_for(process: Popen, seconds: float = RUN_TIMEOUT) -> int:
    """The process's exit code; stopped and TimeoutError if it runs longer."""
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
    if process.poll() is None:
        stop(process)
        raise TimeoutError(f"the review run did not finish within {seconds} s")
    return process.returncode
