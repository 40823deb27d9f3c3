"""End to end through real Airflow (`airflow dags test`), a real S3 API and real files.

One local environment (localenv) serves the module: a moto S3 server on loopback,
throw-away keys, a SQLite ledger and Airflow's embedded SQLite metadata database.
"""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from review_runs import airflow_env

from crossborder import ledger, synthetic
from crossborder.digest import sha256_file
from crossborder.landing import partition_prefix
from crossborder.localenv import (
    US_BUCKET,
    LocalEnv,
    airflow,
)
from crossborder.policy import REPO_ROOT
from crossborder.reports import URL_PREFIX, resolve

pytestmark = pytest.mark.airflow

DAY = date(2026, 11, 23)
DAG_TIMEOUT = 300


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with airflow_env(tmp_path_factory.mktemp("local")) as local:
        yield local


def _logical(day: date) -> str:
    """The scheduled run that exports ``day``: 02:00 Shanghai time the next day."""
    return f"{day + timedelta(days=1)}T02:00:00+08:00"


def _dags_test(env: LocalEnv, dag_id: str, *args: str, extra_env=None):
    result = airflow(
        env, "dags", "test", dag_id, *args, check=False, timeout=DAG_TIMEOUT, extra_env=extra_env
    )
    return result.returncode, result.stdout + result.stderr


def _keys(env: LocalEnv, dataset: str, day: date) -> dict[str, dict]:
    s3 = env.s3_client()
    listing = s3.list_objects_v2(Bucket=US_BUCKET, Prefix=partition_prefix(dataset, day))
    return {o["Key"]: o for o in listing.get("Contents", [])}


def _xcom(env: LocalEnv, task_id: str, key: str, run_id: str):
    """An XCom value straight from Airflow's metadata database (SQLite here)."""
    import json
    import sqlite3

    with sqlite3.connect(env.airflow_home / "airflow.db") as db:
        [(value,)] = db.execute(
            "SELECT value FROM xcom WHERE task_id = ? AND key = ? AND run_id = ?",
            (task_id, key, run_id),
        ).fetchall()
    return json.loads(value)


def _latest(env: LocalEnv, dataset: str, day: date) -> dict:
    return ledger.latest_attempt(ledger.connect(env.ledger_url), dataset, day.isoformat())


EXPORTED = ("production_quality", "owner_profiles", "vehicle_telemetry", "adas_events")


@pytest.fixture(scope="module")
def exported_day(env):
    """Four datasets for DAY, one of each route, exported once by the daily DAGs."""
    for dataset in EXPORTED:
        # telemetry needs enough rows for k-anonymous groups to survive suppression
        rows = 20_000 if dataset == "vehicle_telemetry" else 3000
        synthetic.generate_partition(env.source, dataset, DAY, rows=rows, rows_per_file=1000)
    return {dataset: _dags_test(env, f"cn_export_{dataset}", _logical(DAY)) for dataset in EXPORTED}


def test_cleared_dataset_is_exported_with_a_signed_manifest(env, exported_day):
    code, log = exported_day["production_quality"]
    assert code == 0, log[-3000:]
    keys = _keys(env, "production_quality", DAY)
    prefix = partition_prefix("production_quality", DAY)
    parts = sorted(k for k in keys if k.endswith(".parquet.encrypted"))
    assert parts == [f"{prefix}part-0000{i}.parquet.encrypted" for i in range(3)]
    assert {f"{prefix}manifest.json", f"{prefix}manifest.json.sig"} <= set(keys)
    row = _latest(env, "production_quality", DAY)
    assert (row["state"], row["route"]) == ("exported", "cleared")
    assert (row["rows_in"], row["rows_out"], row["objects"]) == (3000, 3000, 3)
    assert row["manifest_uri"] == f"s3://{US_BUCKET}/{prefix}manifest.json"


def test_draft_policy_fails_closed_and_nothing_leaves(env, exported_day):
    code, log = exported_day["owner_profiles"]
    assert code == 0, log[-3000:]
    assert _keys(env, "owner_profiles", DAY) == {}
    row = _latest(env, "owner_profiles", DAY)
    assert (row["state"], row["route"], row["rows_out"]) == ("blocked", "blocked", 0)
    assert "no complete policy yet" in row["reasons"][0]["text"]


def test_telemetry_is_pseudonymized_verified_and_exported_under_the_thresholds(env, exported_day):
    code, log = exported_day["vehicle_telemetry"]
    assert code == 0, log[-3000:]
    row = _latest(env, "vehicle_telemetry", DAY)
    assert (row["state"], row["route"]) == ("exported", "cleared")
    assert [r["rule"] for r in row["reasons"]] == [
        "scenarios.research_development_and_testing",
        "thresholds.personal.important_data",
    ]
    verification = row["anonymization"]["verification"]
    assert verification["status"] == "passed" and verification["residues"] == []
    staged = pq.read_table(env.staging / "vehicle_telemetry" / f"dt={DAY}")
    source = pq.read_table(env.source / "vehicle_telemetry" / f"dt={DAY}")
    assert not set(staged["vin"].to_pylist()) & set(source["vin"].to_pylist())
    assert staged.num_rows == row["rows_out"] > 0
    events = ledger.list_events(ledger.connect(env.ledger_url), "vehicle_telemetry", str(DAY))
    [decision] = [e["detail"] for e in events if e["kind"] == "decision"]
    assert decision["counts"]["personal"]["new"] == len(set(staged["vin"].to_pylist()))
    assert f"{partition_prefix('vehicle_telemetry', DAY)}manifest.json" in _keys(
        env, "vehicle_telemetry", DAY
    )
    key = env.key("pseudonymization.key").decode()
    assert key not in log  # the run's whole output, every task's log lines included
    task_logs = [p for p in (env.airflow_home / "logs").rglob("*") if p.is_file()]
    assert not any(key in p.read_text(errors="replace") for p in task_logs)


def test_important_data_waits_for_review_and_nothing_leaves(env, exported_day):
    code, log = exported_day["adas_events"]
    assert code == 0, log[-3000:]  # the daily run ends green
    assert _keys(env, "adas_events", DAY) == {}
    row = _latest(env, "adas_events", DAY)
    assert (row["state"], row["route"], row["rows_out"]) == ("awaiting_review", "cac_review", 0)
    assert "categories.camera_media" in {r["rule"] for r in row["reasons"]}


def test_us_side_receives_byte_exact_plaintext_and_china_reconciles(env, exported_day):
    assert exported_day["production_quality"][0] == 0
    code, log = _dags_test(env, "us_receive")
    assert code == 0, log[-3000:]
    staged = env.staging / "production_quality" / f"dt={DAY}"
    landed = env.lake / "production_quality" / f"dt={DAY}"
    names = sorted(p.name for p in staged.glob("part-*.parquet"))
    assert sorted(p.name for p in landed.glob("part-*.parquet")) == names
    for name in names:
        assert (landed / name).read_bytes() == (staged / name).read_bytes()
    assert f"{partition_prefix('production_quality', DAY)}receipt.json" in _keys(
        env, "production_quality", DAY
    )
    code, log = _dags_test(env, "cn_reconcile_receipts")
    assert code == 0, log[-3000:]
    assert _latest(env, "production_quality", DAY)["state"] == "received"


def test_rerunning_the_whole_dag_reuses_every_object(env, exported_day):
    assert exported_day["production_quality"][0] == 0
    before = _keys(env, "production_quality", DAY)
    code, log = _dags_test(env, "cn_export_production_quality", _logical(DAY))
    assert code == 0, log[-3000:]
    after = _keys(env, "production_quality", DAY)
    assert set(after) == set(before)
    for key, obj in before.items():
        if key.endswith(".parquet.encrypted"):
            assert after[key]["ETag"] == obj["ETag"], f"{key} was uploaded again"
    row = _latest(env, "production_quality", DAY)
    assert (row["attempt"], row["state"]) == (2, "exported")


def test_failing_quality_suite_fails_the_run_and_exports_nothing(env):
    day = DAY - timedelta(days=1)
    summary = synthetic.generate_partition(env.source, "production_quality", day, rows=500)
    bad_file = Path(summary.path) / "part-00000.parquet"
    table = pq.read_table(bad_file)
    shifts = table.column("shift").to_pylist()
    shifts[7] = "Z"  # not a shift: a critical expectation
    table = table.set_column(
        table.schema.get_field_index("shift"), "shift", pa.array(shifts, type=pa.string())
    )
    pq.write_table(table, bad_file)
    code, _log = _dags_test(env, "cn_export_production_quality", _logical(day))
    assert code != 0
    assert _keys(env, "production_quality", day) == {}
    row = _latest(env, "production_quality", day)
    assert row["state"] == "failed"
    assert row["error"].startswith("quality_failed:")
    assert "expect_column_values_to_be_in_set on shift (1 unexpected)" in row["error"]
    assert row["quality"]["critical"][0]["sample"] == ["Z"]
    # The failed validate task links to its Data Docs, served by the UI's API server.
    link = _xcom(env, "validate", "_link_QualityReportLink", row["dag_run_id"])
    assert link.startswith(URL_PREFIX + "/production_quality/")
    report = resolve(env.staging, link.removeprefix(URL_PREFIX + "/"))
    assert report is not None and report == Path(row["quality"]["report"]).resolve()
    assert "part-00000.parquet" in row["error"]


def test_missing_success_marker_times_out_with_a_clear_alert(env, tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policies)
    path = policies / "production_quality.yaml"
    text = path.read_text().replace("wait_timeout: 6h", "wait_timeout: 4s")
    path.write_text(text.replace("poke_interval: 5m", "poke_interval: 1s"))
    day = DAY - timedelta(days=5)
    code, log = _dags_test(
        env,
        "cn_export_production_quality",
        _logical(day),
        extra_env={"CROSSBORDER_POLICIES_DIR": str(policies)},
    )
    assert code != 0
    assert "ALERT [partition_late] production_quality" in log
    events = ledger.list_events(ledger.connect(env.ledger_url), "production_quality", str(day))
    alert = next(e["detail"] for e in events if e["kind"] == "alert")
    assert alert["step"] == "wait_for_partition"
    assert (
        f"no _SUCCESS marker in {env.source / 'production_quality' / f'dt={day}'}"
        in (alert["cause"])
    )
    assert _latest(env, "production_quality", day)["state"] == "failed"
    assert _keys(env, "production_quality", day) == {}


def test_staged_plaintext_hash_is_what_the_manifest_vouches_for(env, exported_day):
    import json

    assert exported_day["production_quality"][0] == 0
    prefix = partition_prefix("production_quality", DAY)
    body = env.s3_client().get_object(Bucket=US_BUCKET, Key=f"{prefix}manifest.json")["Body"]
    manifest = json.loads(body.read())
    staged = env.staging / "production_quality" / f"dt={DAY}"
    for obj in manifest["objects"]:
        assert obj["plaintext_sha256"] == sha256_file(staged / obj["part"])[0]
