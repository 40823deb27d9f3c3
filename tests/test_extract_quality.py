"""Extract, staging and routing on real Parquet partitions (no Airflow)."""

import os
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
import pytest

from crossborder import synthetic
from crossborder.anonymize import anonymize_partition
from crossborder.classify import PartitionFacts, classify
from crossborder.digest import sha256_file
from crossborder.errors import PartitionInvalid
from crossborder.extract import extract_partition, is_ready, partition_day
from crossborder.ledger import YearTotals
from crossborder.policy import load_policy
from crossborder.rules import load_rules

DAY = date(2026, 11, 23)


@pytest.fixture
def partition(tmp_path):
    summary = synthetic.generate_partition(
        tmp_path / "src", "production_quality", DAY, rows=2500, rows_per_file=1000
    )
    return tmp_path / "src", summary


def test_partition_day_is_the_shanghai_day_before_the_logical_date():
    shanghai = ZoneInfo("Asia/Shanghai")
    assert partition_day(datetime(2026, 11, 24, 2, 0, tzinfo=shanghai)) == DAY
    # 23:30 UTC on the 23rd is already 07:30 on the 24th in Shanghai.
    assert partition_day(datetime(2026, 11, 23, 23, 30, tzinfo=ZoneInfo("UTC"))) == DAY


def test_extract_records_size_hash_and_rows_of_every_file(partition):
    root, summary = partition
    found = extract_partition(root, "production_quality", str(DAY))
    assert [f.name for f in found.files] == [f"part-0000{i}.parquet" for i in range(3)]
    assert found.rows == 2500
    first = found.files[0]
    assert first.sha256 == sha256_file(summary.path / first.name)[0]
    assert first.size == (summary.path / first.name).stat().st_size


def test_partition_without_success_marker_is_not_ready_nor_extractable(partition):
    root, summary = partition
    (summary.path / "_SUCCESS").unlink()
    assert not is_ready(root, "production_quality", str(DAY))
    with pytest.raises(PartitionInvalid, match="no _SUCCESS marker"):
        extract_partition(root, "production_quality", str(DAY))


def test_unreadable_file_is_named(partition):
    root, summary = partition
    (summary.path / "part-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(PartitionInvalid) as err:
        extract_partition(root, "production_quality", str(DAY))
    assert "part-00001.parquet" in str(err.value)
    assert "dataset production_quality, day 2026-11-23" in str(err.value)


def test_staging_keeps_only_allowed_columns_and_every_row(partition, tmp_path):
    root, _ = partition
    policy = load_policy("production_quality")
    found = extract_partition(root, "production_quality", str(DAY))
    staged = anonymize_partition(policy, found, tmp_path / "staging")
    assert staged.rows == 2500
    assert staged.policy_version == policy.version
    for item in staged.files:
        table = pq.read_table(item.path)
        assert table.column_names == policy.exported_columns
        assert item.sha256 == sha256_file(item.path)[0]
    again = anonymize_partition(policy, found, tmp_path / "staging")
    assert [f.sha256 for f in again.files] == [f.sha256 for f in staged.files]


PASSED = {"status": "passed"}
VERIFIED = {"status": "passed", "k_anonymity": None}


def _classify(policy, quality, staged, verification):
    """Route with no subjects counted yet this year."""
    facts = PartitionFacts(quality, staged, verification)
    return classify(policy, facts, YearTotals(2026, {}), load_rules())


def _staged(policy, **changes):
    return {
        "status": "staged",
        "policy_version": policy.version,
        "columns": policy.exported_columns,
        **changes,
    }


def test_routes_fail_closed():
    active = load_policy("production_quality")
    staged = _staged(active)
    assert _classify(active, PASSED, staged, VERIFIED).route == "cleared"
    assert _classify(active, PASSED, staged, VERIFIED).policy_version == active.version
    cases = {
        "quality failed": (active, {"status": "failed"}, staged, VERIFIED),
        "no suite": (active, {"status": "no_suite"}, staged, VERIFIED),
        "not staged": (active, PASSED, {"status": "skipped"}, VERIFIED),
        "not verified": (active, PASSED, staged, {"status": "skipped"}),
        "verification failed": (active, PASSED, staged, {"status": "failed"}),
        "draft policy": (load_policy("owner_profiles"), PASSED, staged, VERIFIED),
    }
    reasons = {}
    for case, args in cases.items():
        decision = _classify(*args)
        assert decision.route == "blocked", case
        reasons[case] = decision.reasons[0]
    assert reasons["draft policy"].rule == "gates.policy_status"
    assert "no complete policy yet" in reasons["draft policy"].text
    assert "no quality suite" in reasons["no suite"].text
    assert reasons["verification failed"].rule == "gates.verification"


def test_policy_changed_after_staging_is_blocked(tmp_path):
    import shutil

    shutil.copy(load_policy("production_quality").path, tmp_path)
    staged_under = load_policy("production_quality", tmp_path)
    path = tmp_path / "production_quality.yaml"
    path.write_text(
        path.read_text().replace(
            "station:        {class: none, transform: keep}",
            "station:        {class: personal, transform: drop}",
        )
    )
    now = load_policy("production_quality", tmp_path)
    decision = _classify(now, PASSED, _staged(staged_under), VERIFIED)
    assert decision.route == "blocked"
    assert decision.reasons[0].rule == "gates.policy_version"
    assert "re-run from anonymize" in decision.reasons[0].text


def test_run_day_prefers_the_partition_date_param_then_the_logical_date():
    from types import SimpleNamespace

    from crossborder.airflow_glue import run_day

    shanghai = ZoneInfo("Asia/Shanghai")
    scheduled = datetime(2026, 11, 24, 2, 0, tzinfo=shanghai)
    assert run_day({"params": {"partition_date": "2026-10-01"}}) == "2026-10-01"
    assert run_day({"params": {"partition_date": None}, "logical_date": scheduled}) == str(DAY)
    no_logical_date = {"logical_date": None, "dag_run": SimpleNamespace(run_after=scheduled)}
    assert run_day(no_logical_date) == str(DAY)


def test_empty_partition_is_refused(tmp_path):
    folder = tmp_path / "production_quality" / f"dt={DAY}"
    folder.mkdir(parents=True)
    (folder / "_SUCCESS").touch()
    with pytest.raises(PartitionInvalid, match="no part files"):
        extract_partition(tmp_path, "production_quality", str(DAY))


def test_source_file_changed_after_extract_is_not_staged(partition, tmp_path):
    root, summary = partition
    found = extract_partition(root, "production_quality", str(DAY))
    changed = summary.path / "part-00001.parquet"
    changed.write_bytes(changed.read_bytes())  # same bytes, rewritten: a new mtime
    os.utime(changed, ns=(found.files[1].mtime_ns + 10**9,) * 2)
    with pytest.raises(PartitionInvalid, match="changed since it was extracted") as err:
        anonymize_partition(load_policy("production_quality"), found, tmp_path / "staging")
    assert err.value.file == str(changed)
