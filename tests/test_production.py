"""The production configuration, end to end: Airflow on the Celery executor with
PostgreSQL (metadata, Celery results, export ledger) and Redis (broker) on loopback.

One cluster (``crossborder.prodenv``): API server, scheduler, dag-processor and two
Celery workers as processes, fresh databases and a Redis index of its own. A day's
partitions for all six datasets are triggered through the REST API as the day's runs
(logical date = the schedule's latest slot, so the scheduler adds no run of its own),
one review is approved and one rejected by approvers through the API, then the U.S.
bucket, the ledger and the metadata database are checked, and the cleanup is checked
last. Deselected by ``make test``; run it with ``make test-prod`` (``pytest -m production``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis
import sqlalchemy as sa
from airflow_api import answer, call, token

from crossborder import crypto, landing, ledger, review, synthetic
from crossborder.extract import partition_day
from crossborder.localenv import US_BUCKET, LocalEnv, start_s3_server
from crossborder.policy import policy_files, read_schedule
from crossborder.prodenv import CeleryCluster

pytestmark = pytest.mark.production

# dataset → (route, ledger state once its daily run has ended)
ROUTES = {
    "production_quality": ("cleared", "exported"),
    "vehicle_telemetry": ("cleared", "exported"),
    "diagnostics": ("cleared", "exported"),
    "adas_events": ("cac_review", "awaiting_review"),
    "charging_sessions": ("cac_review", "awaiting_review"),
    "owner_profiles": ("blocked", "blocked"),
}
APPROVED, REJECTED = "adas_events", "charging_sessions"
# Small days, two files each (so uploads are mapped); telemetry needs enough rows for its
# k-anonymous groups to survive suppression.
ROWS = {"vehicle_telemetry": (20_000, 10_000)}
DEFAULT_ROWS = (2_000, 1_000)
LI, ZHANG, CHEN = (a["id"] for a in review.load_config().approvers)
REF = "CAC-SA-2026-000123"
RUN_TIMEOUT = 900.0
SHANGHAI = ZoneInfo("Asia/Shanghai")
TIMINGS: dict[str, float] = {}
TASKS_PER_WORKER: dict[str, int] = {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    server, endpoint = start_s3_server()
    try:
        env = LocalEnv(tmp_path_factory.mktemp("production"), endpoint)
        env.prepare()
        cluster = CeleryCluster(env, workers=2, concurrency=2)
        try:
            cluster.start()
            TIMINGS.update({f"cluster {k}": v for k, v in cluster.timings.items()})
            yield cluster
        finally:
            cluster.close()  # no-op if test_cleanup_leaves_nothing_behind closed it
    finally:
        server.stop()


def _latest_slot(schedule: dict, now: datetime) -> datetime:
    """The latest daily slot (``expected_by``, Shanghai time) not after ``now``: the
    logical date the scheduler gives the day's run."""
    hour, minute = (int(x) for x in schedule["expected_by"].split(":"))
    slot = now.astimezone(SHANGHAI).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return slot if slot <= now else slot - timedelta(days=1)


@dataclass
class Day:
    day: date
    tokens: dict[str, str]
    export_runs: dict[str, str] = field(default_factory=dict)  # dataset → run id
    export_states: dict[str, str] = field(default_factory=dict)
    held: dict[str, dict] = field(default_factory=dict)  # dataset → ledger row after daily run
    review_runs: dict[str, str] = field(default_factory=dict)
    review_states: dict[str, str] = field(default_factory=dict)
    refused_status: int | None = None


def _api(cluster: CeleryCluster, tokens: dict[str, str], path: str, method="GET", body=None):
    return call(f"{cluster.base_url}/api/v2{path}", tokens["admin"], method, body)


def _run_path(dag_id: str, run_id: str) -> str:
    return f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"


def _wait_for_runs(cluster: CeleryCluster, tokens, runs: dict[str, tuple[str, str]]) -> dict:
    """Poll until every (dag_id, run_id) has ended; name → final state."""
    deadline = time.monotonic() + RUN_TIMEOUT
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        cluster.check_running()
        for name, (dag_id, run_id) in runs.items():
            if name not in states:
                state = _api(cluster, tokens, _run_path(dag_id, run_id))["state"]
                if state in ("success", "failed"):
                    states[name] = state
        if len(states) == len(runs):
            return states
        time.sleep(3)
    raise TimeoutError(f"runs still going after {RUN_TIMEOUT} s: {set(runs) - set(states)}")


def _task_states(cluster: CeleryCluster, tokens, dag_id: str, run_id: str) -> dict[str, str]:
    found = _api(cluster, tokens, f"{_run_path(dag_id, run_id)}/taskInstances?limit=100")
    return {f"{t['task_id']}[{t['map_index']}]": t["state"] for t in found["task_instances"]}


def _gate(cluster: CeleryCluster, tokens, run_id: str, task_id: str) -> dict:
    """The open gate ``task_id`` of review run ``run_id`` (waits until it opens)."""
    query = urllib.parse.urlencode({"response_received": "false"})
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        cluster.check_running()
        found = _api(cluster, tokens, f"/dags/cn_cac_review/dagRuns/~/hitlDetails?{query}")
        for detail in found.get("hitl_details", []):
            instance = detail["task_instance"]
            if (instance["dag_run_id"], instance["task_id"]) == (run_id, task_id):
                return detail
        time.sleep(2)
    raise TimeoutError(f"gate {task_id} of {run_id} did not open")


@pytest.fixture(scope="module")
def day_run(cluster: CeleryCluster) -> Day:
    """The day's exports for every dataset, then one review approved, one rejected."""
    env, started = cluster.env, time.monotonic()
    now = datetime.now(SHANGHAI)
    slots = {p.stem: _latest_slot(read_schedule(p), now) for p in policy_files()}
    assert set(slots) == set(ROUTES)
    days = {partition_day(slot) for slot in slots.values()}
    assert len(days) == 1, f"the policies' daily slots export different days: {slots}"
    [day] = days
    for dataset in ROUTES:
        rows, per_file = ROWS.get(dataset, DEFAULT_ROWS)
        synthetic.generate_partition(
            env.source, dataset, day, rows=rows, rows_per_file=per_file, seed=day.toordinal()
        )
    cluster.wait_for_dags([f"cn_export_{d}" for d in ROUTES] + ["cn_cac_review"])
    base = cluster.base_url
    run = Day(day, {user: token(base, user, pw) for user, pw in env.ui_users().items()})
    TIMINGS["data + DAGs parsed"] = time.monotonic() - started

    started = time.monotonic()
    for dataset, slot in slots.items():  # triggered while paused: the run is the day's slot
        body = {"logical_date": slot.isoformat(), "conf": {}}
        made = _api(cluster, run.tokens, f"/dags/cn_export_{dataset}/dagRuns", "POST", body)
        run.export_runs[dataset] = made["dag_run_id"]
    for dataset in ROUTES:
        _api(cluster, run.tokens, f"/dags/cn_export_{dataset}", "PATCH", {"is_paused": False})
    assert _api(cluster, run.tokens, "/dags/cn_cac_review")["is_paused"] is False
    run.export_states = _wait_for_runs(
        cluster, run.tokens, {d: (f"cn_export_{d}", r) for d, r in run.export_runs.items()}
    )
    TIMINGS["daily runs (6 DAGs)"] = time.monotonic() - started
    engine = ledger.connect(cluster.ledger_url)
    run.held = {d: ledger.latest_attempt(engine, d, day.isoformat()) for d in ROUTES}
    if set(run.export_states.values()) != {"success"}:
        return run  # reported by test_the_days_runs_route_every_dataset; no review to answer

    started = time.monotonic()
    run.review_runs = {d: f"review__{run.export_runs[d]}" for d in (APPROVED, REJECTED)}
    approve = {"cac_reference": REF, "reason": None}
    first = _gate(cluster, run.tokens, run.review_runs[APPROVED], "first_approval")
    answer(base, run.tokens[LI], first, "Approve", approve)
    rejected = _gate(cluster, run.tokens, run.review_runs[REJECTED], "first_approval")
    reject = {"cac_reference": None, "reason": "charging network data"}
    answer(base, run.tokens[CHEN], rejected, "Reject", reject)
    second = _gate(cluster, run.tokens, run.review_runs[APPROVED], "second_approval")
    try:  # four eyes: the first approver may not answer the second gate
        answer(base, run.tokens[LI], second, "Approve", approve)
    except urllib.error.HTTPError as refused:
        run.refused_status = refused.code
    answer(base, run.tokens[ZHANG], second, "Approve", approve)
    run.review_states = _wait_for_runs(
        cluster, run.tokens, {d: ("cn_cac_review", r) for d, r in run.review_runs.items()}
    )
    TIMINGS["reviews answered and run"] = time.monotonic() - started
    return run


def test_the_days_runs_route_every_dataset(cluster, day_run):
    failed = {
        d: _task_states(cluster, day_run.tokens, f"cn_export_{d}", r)
        for d, r in day_run.export_runs.items()
        if day_run.export_states[d] != "success"
    }
    assert not failed, failed
    for dataset, (route, state) in ROUTES.items():
        row = day_run.held[dataset]
        assert row is not None, f"no ledger attempt for {dataset} {day_run.day}"
        assert (row["route"], row["state"]) == (route, state), (dataset, row["error"])
        assert row["dag_run_id"] == day_run.export_runs[dataset]


def test_reviews_answered_through_the_api_decide_the_export(cluster, day_run):
    assert day_run.review_states == {APPROVED: "success", REJECTED: "success"}
    assert day_run.refused_status == 403  # Airflow itself refused the same approver twice
    engine = ledger.connect(cluster.ledger_url)
    approved = ledger.latest_attempt(engine, APPROVED, day_run.day.isoformat())
    assert approved["state"] == "exported"
    assert [(a["by"], a["cac_reference"]) for a in approved["approvals"]] == [
        (LI, REF),
        (ZHANG, REF),
    ]
    rejected = ledger.latest_attempt(engine, REJECTED, day_run.day.isoformat())
    assert rejected["state"] == "rejected" and "charging network data" in rejected["error"]
    # The gates waited in awaiting_input: no triggerer was needed, and none ran.
    assert cluster.metadata("SELECT id FROM job WHERE job_type = 'TriggererJob'") == []


def test_us_bucket_holds_signed_exports_of_cleared_and_approved_data_only(cluster, day_run):
    s3, day = cluster.env.s3_client(), day_run.day
    engine = ledger.connect(cluster.ledger_url)
    public = cluster.env.key("manifest_signing_public.pem")
    for dataset, (route, _state) in ROUTES.items():
        keys = landing.list_keys(s3, US_BUCKET, landing.partition_prefix(dataset, day))
        if route == "blocked" or dataset == REJECTED:
            assert keys == [], dataset
            continue
        data = landing.get_bytes(s3, US_BUCKET, landing.manifest_key(dataset, day))
        crypto.verify_signature(
            data, landing.get_bytes(s3, US_BUCKET, landing.signature_key(dataset, day)), public
        )
        manifest = json.loads(data)
        row = ledger.latest_attempt(engine, dataset, day.isoformat())
        assert (manifest["dataset"], manifest["partition_date"]) == (dataset, day.isoformat())
        assert (manifest["route"], manifest["dag_run_id"]) == (route, day_run.export_runs[dataset])
        parts = sorted(k for k in keys if k.endswith(".parquet.encrypted"))
        assert parts == sorted(o["key"] for o in manifest["objects"]) and len(parts) == 2
        assert row["manifest_uri"] == f"s3://{US_BUCKET}/{landing.manifest_key(dataset, day)}"
        assert manifest["rows_out"] == row["rows_out"] > 0
        assert bool(manifest["approvals"]) == (dataset == APPROVED)


def test_the_ledger_is_on_postgresql(cluster, day_run):
    engine = ledger.connect(cluster.ledger_url)
    assert engine.dialect.name == "postgresql"
    assert not cluster.env.ledger_path.exists()  # nothing fell back to the SQLite default
    with engine.connect() as conn:
        states = dict(
            conn.execute(
                sa.select(ledger.attempts.c.dataset, ledger.attempts.c.state).where(
                    ledger.attempts.c.partition_date == day_run.day.isoformat()
                )
            ).all()
        )
    assert states == {
        **{d: s for d, (_r, s) in ROUTES.items()},
        APPROVED: "exported",
        REJECTED: "rejected",
    }


def test_tasks_ran_on_both_celery_workers(cluster, day_run):
    rows = cluster.metadata(
        "SELECT hostname, count(*) AS n FROM task_instance "
        "WHERE state = 'success' AND dag_id LIKE 'cn_%' GROUP BY hostname"
    )
    per_worker = {r["hostname"]: r["n"] for r in rows}  # hostname_callable: the node's name
    TASKS_PER_WORKER.update(per_worker)
    assert set(per_worker) == set(cluster.worker_names), per_worker
    assert all(n > 0 for n in per_worker.values())
    # Celery's own record of the same work, in its PostgreSQL result backend.
    [done] = cluster.metadata("SELECT count(*) AS n FROM celery_taskmeta WHERE status = 'SUCCESS'")
    assert done["n"] >= sum(per_worker.values())
    # ... sent through the cluster's own Redis database index.
    broker = redis.Redis.from_url(cluster.broker_url)
    try:
        assert b"_kombu.binding.default" in set(broker.keys("_kombu.binding.*"))
    finally:
        broker.close()


def test_components_listen_on_loopback_only(cluster, day_run):
    listening = cluster.listening()
    assert listening, "the API server should be listening"
    assert {address for _name, address, _port in listening} == {"127.0.0.1"}, listening


def test_cleanup_leaves_nothing_behind(cluster, day_run, capsys):
    engine = ledger.connect(cluster.ledger_url)
    engine.dispose()  # this process's own connections to the ledger
    started = time.monotonic()
    report = cluster.close()
    TIMINGS["cleanup"] = time.monotonic() - started
    assert report["errors"] == [] and report["killed_strays"] == [], report
    assert report["remaining_processes"] == []
    assert cluster.live_processes() == []
    assert sorted(report["dropped_databases"]) == sorted([cluster.metadata_db, cluster.ledger_db])
    admin = sa.create_engine(cluster.admin_url)
    try:
        with admin.connect() as conn:
            left = conn.execute(
                sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                {"p": f"{cluster.name}%"},
            ).all()
    finally:
        admin.dispose()
    assert left == []
    assert report["redis_keys_left"] == 0
    with capsys.disabled():
        print("\nproduction run timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in TIMINGS.items()))
        print(f"successful task instances per Celery worker: {TASKS_PER_WORKER}")
        print(f"cleanup report: {report}")
