"""The daily export's task functions, run without Airflow against a real S3 API."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date, datetime
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from conftest import CapturingChannels, write_parquet

from crossborder import landing, ledger, pii, receive, steps, synthetic
from crossborder.anonymize import staging_path
from crossborder.digest import sha256_file
from crossborder.errors import AnonymizationResidue, ExportRefused, KeyUnavailable
from crossborder.localenv import US_BUCKET, LocalEnv

DATASET = "production_quality"
DAY = "2026-11-23"
MiB = 1 << 20


@pytest.fixture
def env(tmp_path, s3_endpoint, s3_client):
    """A fresh local environment on the session's S3 server, its landing bucket emptied."""
    local = LocalEnv(tmp_path / "env", s3_endpoint)
    if _bucket_exists(s3_client):
        for key in landing.list_keys(s3_client, US_BUCKET, ""):
            s3_client.delete_object(Bucket=US_BUCKET, Key=key)
    local.prepare()
    return local


def _bucket_exists(s3) -> bool:
    return US_BUCKET in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}


def _decided(
    env: LocalEnv, run_id: str = "run-1", dataset: str = DATASET, channels=None
) -> SimpleNamespace:
    """The steps up to the route decision, as the DAG runs them; their outputs by name."""
    cfg = dataclasses.replace(env.settings(), alert_channels=channels)
    extracted = steps.extract(cfg, dataset, DAY, run_id)
    quality = steps.validate(cfg, extracted, run_id)
    staged = steps.anonymize(cfg, extracted, run_id)
    verification = steps.verify(cfg, staged, run_id)
    decision = steps.decide(cfg, dataset, DAY, run_id, quality, staged, verification)
    return SimpleNamespace(
        cfg=cfg,
        extracted=extracted,
        quality=quality,
        staged=staged,
        verification=verification,
        decision=decision,
    )


def _run_cleared_path(env: LocalEnv, run_id: str, dataset: str = DATASET, channels=None) -> dict:
    """Every step of the cleared route, as the DAG runs them."""
    done = _decided(env, run_id, dataset, channels)
    parts = steps.plan_upload(done.cfg, done.staged, done.decision)
    objects = [steps.upload_part(done.cfg, part) for part in parts]
    return steps.publish(
        done.cfg,
        dataset,
        DAY,
        run_id,
        objects,
        done.quality,
        done.staged,
        done.verification,
        done.decision,
        done.extracted,
    )


def _bucket_state(env: LocalEnv) -> dict[str, str]:
    s3 = env.s3_client()
    listing = s3.list_objects_v2(Bucket=US_BUCKET, Prefix=landing.partition_prefix(DATASET, DAY))
    return {o["Key"]: o["ETag"] for o in listing.get("Contents", [])}


def test_retrying_every_step_in_the_same_run_changes_nothing(env):
    synthetic.generate_partition(env.source, DATASET, date.fromisoformat(DAY), rows=2000)
    first = _run_cleared_path(env, "run-1")
    state = _bucket_state(env)
    manifest = landing.get_bytes(env.s3_client(), US_BUCKET, landing.manifest_key(DATASET, DAY))

    again = _run_cleared_path(env, "run-1")

    assert again == first
    assert _bucket_state(env) == state
    assert landing.get_bytes(env.s3_client(), US_BUCKET, landing.manifest_key(DATASET, DAY)) == (
        manifest
    )
    row = ledger.latest_attempt(ledger.connect(env.ledger_url), DATASET, DAY)
    assert (row["attempt"], row["state"], row["rows_out"]) == (1, "exported", 2000)


@pytest.mark.parametrize(
    ("route", "refusal"),
    [
        ("blocked", "route is 'blocked': it never leaves"),
        ("cac_review", "latest attempt for the day was routed 'cleared'"),
    ],
)
def test_upload_and_publish_refuse_a_route_the_ledger_does_not_hold(env, route, refusal):
    synthetic.generate_partition(env.source, DATASET, date.fromisoformat(DAY), rows=100)
    done = _decided(env)
    forged = {**done.decision, "route": route}
    with pytest.raises(ExportRefused, match=refusal):
        steps.plan_upload(done.cfg, done.staged, forged)
    with pytest.raises(ExportRefused):
        steps.publish(
            done.cfg,
            DATASET,
            DAY,
            "run-1",
            [],
            done.quality,
            done.staged,
            done.verification,
            forged,
            done.extracted,
        )
    assert _bucket_state(env) == {}


def test_upload_refuses_a_decision_made_under_another_policy_version(env):
    synthetic.generate_partition(env.source, DATASET, date.fromisoformat(DAY), rows=100)
    done = _decided(env)
    restaged = {**done.staged, "policy_version": "sha256:other"}
    with pytest.raises(ExportRefused, match="the decision was made under"):
        steps.plan_upload(done.cfg, restaged, done.decision)
    assert _bucket_state(env) == {}


def test_missing_recipient_key_fails_before_anything_is_uploaded(env):
    synthetic.generate_partition(env.source, DATASET, date.fromisoformat(DAY), rows=100)
    done = _decided(env)
    parts = steps.plan_upload(done.cfg, done.staged, done.decision)
    no_key = dataclasses.replace(done.cfg, recipient_public_pem=None)
    with pytest.raises(KeyUnavailable, match="recipient_public_pem is not configured"):
        steps.upload_part(no_key, parts[0])
    assert _bucket_state(env) == {}


# A real process killed mid-upload: it stops after the first multipart part is stored.
KILLED_UPLOAD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from crossborder import landing
    from crossborder.localenv import US_BUCKET, LocalEnv

    env = LocalEnv(Path(sys.argv[1]), sys.argv[2])
    s3 = env.s3_client()
    def stall(**_):
        print("part stored", flush=True)
        time.sleep(600)
    s3.meta.events.register("after-call.s3.UploadPart", stall)
    transfer = landing.TransferSettings(5 << 20, 5 << 20, max_concurrency=1)
    landing.upload_encrypted(s3, US_BUCKET, sys.argv[3], Path(sys.argv[4]),
                             env.key("us_recipient_public.pem"), Path(sys.argv[5]), transfer)
    """
)


def test_run_killed_mid_upload_is_completed_by_the_next_run(env, tmp_path):
    staged_dir = staging_path(env.staging, DATASET, DAY)
    staged_dir.mkdir(parents=True)
    plain = write_parquet(staged_dir / "part-00000.parquet", rows=24, blob_bytes=MiB)
    key = landing.object_key(DATASET, DAY, plain.name)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_UPLOAD,
            str(env.root),
            env.s3_endpoint,
            key,
            str(plain),
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert proc.stdout.readline().strip() == "part stored"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    s3 = env.s3_client()
    assert len(s3.list_multipart_uploads(Bucket=US_BUCKET).get("Uploads", [])) == 1
    assert _bucket_state(env) == {}

    digest, size = sha256_file(plain)
    staged = {
        "dataset": DATASET,
        "day": DAY,
        "policy_version": "sha256:test",
        "columns": ["vehicle", "speed_kmh", "soc_pct", "blob"],
        "rows": 24,
        "files": [
            {"name": plain.name, "path": str(plain), "rows": 24, "size": size, "sha256": digest}
        ],
        "anonymization": {},
    }
    decision = {"route": "cleared", "policy_version": "sha256:test", "reasons": []}
    engine = ledger.connect(env.ledger_url)  # the run's decision, as classify records it
    attempt = ledger.begin_attempt(engine, DATASET, DAY, "run-2")
    ledger.update_attempt(engine, attempt, route="cleared", policy_version="sha256:test")
    cfg = env.settings()
    started = time.monotonic()
    parts = steps.plan_upload(cfg, staged, decision)
    objects = [steps.upload_part(cfg, part) for part in parts]
    steps.publish(
        cfg,
        DATASET,
        DAY,
        "run-2",
        objects,
        {"status": "passed"},
        staged,
        {"status": "passed"},
        decision,
        {"rows": 24},
    )
    assert time.monotonic() - started < 60
    assert s3.list_multipart_uploads(Bucket=US_BUCKET).get("Uploads", []) == []

    receive.receive_partition(
        s3,
        US_BUCKET,
        DATASET,
        DAY,
        env.lake,
        env.key("us_recipient_private.pem"),
        env.key("manifest_signing_public.pem"),
    )
    landed = env.lake / DATASET / f"dt={DAY}" / plain.name
    assert landed.read_bytes() == Path(plain).read_bytes()


def test_late_partition_alerts_once_while_the_export_waits(env):
    shanghai = ZoneInfo("Asia/Shanghai")
    channels = CapturingChannels(link="http://ui/dags/cn_export_x/runs/run-1/tasks/wait")
    cfg = dataclasses.replace(env.settings(), alert_channels=channels)

    def poke(hour: int, minute: int) -> bool:
        now = datetime(2026, 11, 24, hour, minute, tzinfo=shanghai)
        return steps.partition_ready(cfg, DATASET, DAY, "run-1", "01:30", now=now)

    def late_alerts() -> list[dict]:
        events = ledger.list_events(ledger.connect(env.ledger_url), DATASET, DAY)
        return [e["detail"] for e in events if e["detail"].get("kind") == "partition_late"]

    assert poke(1, 0) is False
    assert late_alerts() == []
    assert poke(1, 45) is False
    assert poke(2, 30) is False
    [alert] = late_alerts()
    assert alert["step"] == "wait_for_partition"
    assert "by 01:30 Shanghai time; still waiting" in alert["cause"]
    [sent] = channels.sent  # one alert however often the sensor pokes
    assert (sent.kind, sent.dataset, sent.day, sent.link) == (
        "partition_late", DATASET, DAY, channels.link
    )  # fmt: skip
    synthetic.generate_partition(env.source, DATASET, date.fromisoformat(DAY), rows=10)
    assert poke(3, 0) is True


def test_quality_warnings_travel_in_the_manifest_and_the_export_goes_on(env):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    summary = synthetic.generate_partition(env.source, DATASET, date.fromisoformat(DAY), rows=500)
    path = summary.path / "part-00000.parquet"
    table = pq.read_table(path)
    values = table.column("measurement_mm").to_pylist()
    values[3] = -5.0  # out of range: a warning in the suite
    index = table.schema.get_field_index("measurement_mm")
    pq.write_table(table.set_column(index, "measurement_mm", pa.array(values)), path)

    channels = CapturingChannels()
    _run_cleared_path(env, "run-1", channels=channels)
    steps.validate(dataclasses.replace(env.settings(), alert_channels=channels),
                   steps.extract(env.settings(), DATASET, DAY, "run-1"), "run-1")  # fmt: skip
    [warned] = channels.sent  # one alert, even when validate is retried
    assert (warned.kind, warned.step) == ("quality_warning", "validate")
    assert "measurement_mm" in warned.cause

    body = landing.get_bytes(env.s3_client(), US_BUCKET, landing.manifest_key(DATASET, DAY))
    quality = json.loads(body)["quality"]
    assert quality["status"] == "passed"
    [warning] = quality["warnings"]
    assert (warning["column"], warning["severity"], warning["unexpected_count"]) == (
        "measurement_mm",
        "warning",
        1,
    )
    assert "sample" not in warning  # sample values stay in China
    row = ledger.latest_attempt(ledger.connect(env.ledger_url), DATASET, DAY)
    assert row["state"] == "exported"
    assert row["quality"]["warnings"][0]["sample"] == [-5.0]


def test_telemetry_is_verified_and_cleared_under_the_thresholds_with_its_subjects_counted(env):
    import pyarrow.parquet as pq

    synthetic.generate_partition(
        env.source, "vehicle_telemetry", date.fromisoformat(DAY), rows=20_000
    )
    done = _decided(env, "run-1", "vehicle_telemetry")
    decision = done.decision
    assert decision["route"] == "cleared"
    assert [r["rule"] for r in decision["reasons"]] == [
        "scenarios.research_development_and_testing",
        "thresholds.personal.important_data",
    ]
    vins = set(
        pq.read_table(staging_path(env.staging, "vehicle_telemetry", DAY))["vin"].to_pylist()
    )
    personal = decision["counts"]["personal"]
    assert (personal["exported"], personal["new"], personal["partition"]) == (
        0,
        len(vins),
        len(vins),
    )
    assert decision["counts"]["sensitive_personal"]["partition"] == 0  # positions generalized
    engine = ledger.connect(env.ledger_url)
    year = decision["counts"]["year"]
    reserved = ledger.count_subjects(engine, year, {"personal": vins}).of("personal")
    assert reserved.recorded == len(vins)  # the cleared decision recorded its subjects
    assert _decided(env, "run-1", "vehicle_telemetry").decision == decision  # re-run: the same
    [event] = [
        e for e in ledger.list_events(engine, "vehicle_telemetry", DAY) if e["kind"] == "decision"
    ]
    assert event["detail"] == decision
    row = ledger.latest_attempt(engine, "vehicle_telemetry", DAY)
    assert (row["route"], row["state"]) == ("cleared", "in_progress")
    evidence = row["anonymization"]
    assert evidence["columns"]["vin"]["transform"] == "pseudonymize"
    assert evidence["columns"]["lat_gcj02"]["options"]["grid_deg"] == 0.05
    verification = evidence["verification"]
    assert verification == done.verification and verification["status"] == "passed"
    assert set(verification["pii"]["vin"]) == set(pii.DETECTORS)
    assert verification["k_anonymity"]["k_achieved"] >= 5
    rows_removed = (
        evidence["k_anonymity"]["rows_suppressed"] + (evidence["sensitive_areas"]["rows_dropped"])
    )
    assert done.staged["rows"] + rows_removed == done.extracted["rows"]
    assert env.key("pseudonymization.key").decode() not in json.dumps(row, default=str)
    assert _bucket_state(env) == {}


def test_manifest_carries_the_anonymization_evidence(env):
    synthetic.generate_partition(env.source, DATASET, date.fromisoformat(DAY), rows=500)
    _run_cleared_path(env, "run-1")
    manifest = json.loads(
        landing.get_bytes(env.s3_client(), US_BUCKET, landing.manifest_key(DATASET, DAY))
    )
    evidence = manifest["anonymization"]
    assert evidence["policy_version"] == manifest["policy_version"]
    assert evidence["columns"]["plant"] == {"class": "none", "transform": "keep", "options": {}}
    assert evidence["verification"]["status"] == "passed"
    assert evidence["verification"]["suite"]["suite"] == f"{DATASET}.anonymized"
    row = ledger.latest_attempt(ledger.connect(env.ledger_url), DATASET, DAY)
    assert row["anonymization"]["verification"] == evidence["verification"]


def test_residue_fails_the_verify_step_records_why_and_nothing_leaves(env, monkeypatch):
    from crossborder import anonymize

    monkeypatch.setitem(anonymize.TRANSFORMS, "pseudonymize", anonymize.TRANSFORMS["keep"])
    synthetic.generate_partition(env.source, "diagnostics", date.fromisoformat(DAY), rows=500)
    cfg = env.settings()
    extracted = steps.extract(cfg, "diagnostics", DAY, "run-1")
    steps.validate(cfg, extracted, "run-1")
    staged = steps.anonymize(cfg, extracted, "run-1")
    with pytest.raises(AnonymizationResidue, match="vin: vin in"):
        steps.verify(cfg, staged, "run-1")
    row = ledger.latest_attempt(ledger.connect(env.ledger_url), "diagnostics", DAY)
    assert row["state"] == "failed" and row["error"].startswith("anonymization_residue:")
    assert row["anonymization"]["verification"]["status"] == "failed"
    assert _bucket_state(env) == {}


def test_a_broken_rules_file_fails_the_decision_and_routes_nothing(env, tmp_path, monkeypatch):
    from crossborder.errors import RulesInvalid

    synthetic.generate_partition(env.source, DATASET, date.fromisoformat(DAY), rows=100)
    broken = tmp_path / "export_rules.yaml"
    broken.write_text("rules_format: 1\n")
    monkeypatch.setenv("CROSSBORDER_RULES_FILE", str(broken))
    with pytest.raises(RulesInvalid, match="does not match the rules schema"):
        _decided(env)
    row = ledger.latest_attempt(ledger.connect(env.ledger_url), DATASET, DAY)
    assert (row["state"], row["route"]) == ("failed", None)
    assert row["error"].startswith(f"rules_invalid: file {broken}: does not match the rules schema")


def test_a_blocked_partition_alerts_once_and_nothing_leaves(env):
    synthetic.generate_partition(env.source, "owner_profiles", date.fromisoformat(DAY), rows=50)
    channels = CapturingChannels(link="http://ui/dags/cn_export_owner_profiles/runs/r/tasks/h")
    done = _decided(env, "run-1", "owner_profiles", channels)
    handover = {"extracted": done.extracted, "staged": done.staged}
    held = steps.record_held(done.cfg, "owner_profiles", DAY, "run-1", done.decision, handover)
    assert held["route"] == "blocked"
    [alert] = channels.sent
    assert (alert.kind, alert.step, alert.dataset, alert.day) == (
        "partition_blocked", "record_held", "owner_profiles", DAY
    )  # fmt: skip
    assert alert.cause.startswith("blocked, nothing leaves China: ") and alert.link
    assert landing.list_keys(env.s3_client(), US_BUCKET, "owner_profiles/") == []


def _receive_and_reconcile(env: LocalEnv) -> dict:
    s3 = env.s3_client()
    private, public = env.key("us_recipient_private.pem"), env.key("manifest_signing_public.pem")
    receipt = receive.receive_partition(s3, US_BUCKET, DATASET, DAY, env.lake, private, public)
    steps.reconcile_receipts(env.settings())
    return receipt.to_dict()


def test_re_export_after_a_policy_change_publishes_a_new_manifest_version(
    env, tmp_path, monkeypatch
):
    import pyarrow.parquet as pq

    synthetic.generate_partition(env.source, DATASET, date.fromisoformat(DAY), rows=400)
    first = _run_cleared_path(env, "scheduled-1")
    first_receipt = _receive_and_reconcile(env)
    s3 = env.s3_client()
    old = json.loads(landing.get_bytes(s3, US_BUCKET, landing.manifest_key(DATASET, DAY)))
    assert old["lineage"] == {"export": 1, "supersedes": None}

    # The policy changes: inspection times leave China to the hour only.
    policies = tmp_path / "policies"
    policies.mkdir()
    text = (Path(steps.__file__).parents[2] / "policies" / f"{DATASET}.yaml").read_text()
    changed = text.replace(
        "inspected_at:   {class: none, transform: keep}",
        "inspected_at:   {class: none, transform: generalize_time, options: {unit: 1h}}",
    )
    assert changed != text
    (policies / f"{DATASET}.yaml").write_text(changed)
    monkeypatch.setenv("CROSSBORDER_POLICIES_DIR", str(policies))

    second = _run_cleared_path(env, "manual__re-export")  # a new run for the same day
    new = json.loads(landing.get_bytes(s3, US_BUCKET, landing.manifest_key(DATASET, DAY)))
    engine = ledger.connect(env.ledger_url)
    before, after = ledger.earlier_exports(engine, DATASET, DAY, 10**9)
    assert new["policy_version"] != old["policy_version"]
    assert new["lineage"] == {
        "export": 2,
        "supersedes": {
            "manifest_sha256": before["manifest_sha256"],
            "dag_run_id": "scheduled-1",
            "policy_version": old["policy_version"],
        },
    }
    assert (first["manifest"], second["manifest"]) == (before["manifest_uri"],) * 2
    # The U.S. side receives the new version and replaces the old one in its lake.
    second_receipt = _receive_and_reconcile(env)
    assert second_receipt["manifest_sha256"] == after["manifest_sha256"]
    assert second_receipt["manifest_sha256"] != first_receipt["manifest_sha256"]
    landed = pq.read_table(env.lake / DATASET / f"dt={DAY}").column("inspected_at").to_pylist()
    assert all(t.minute == 0 and t.second == 0 for t in landed)
    latest = ledger.latest_attempt(engine, DATASET, DAY)
    assert (latest["dag_run_id"], latest["state"]) == ("manual__re-export", "received")
    assert ledger.get_attempt(engine, before["id"])["state"] == "received"  # history kept
    # Re-running the re-export changes nothing: still the second version.
    _run_cleared_path(env, "manual__re-export")
    again = json.loads(landing.get_bytes(s3, US_BUCKET, landing.manifest_key(DATASET, DAY)))
    assert again["lineage"] == new["lineage"]
