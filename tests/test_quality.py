"""Quality gate: every dataset passes its suite; each class of defect is caught.

Defects are planted in real generated partitions; the daily steps run against a real
S3 API. Critical defects quarantine the partition (ledger ``failed`` with the failed
expectations, counts and masked samples; nothing uploaded); warnings let it go on,
alert, and land in the ledger and the manifest.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crossborder import landing, ledger, spill, steps, synthetic
from crossborder.errors import PartitionInvalid, QualityFailed
from crossborder.localenv import US_BUCKET, LocalEnv
from crossborder.quality import (
    by_group_then_time,
    schema_drift,
    suite_path,
    validate_partition,
    volume_failures,
)

DAY = date(2026, 11, 23)
TELEMETRY = "vehicle_telemetry"


def _files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("part-*.parquet"))


@pytest.mark.parametrize("dataset", synthetic.DATASETS)
def test_generated_data_passes_its_suite_without_warnings(tmp_path, dataset):
    summary = synthetic.generate_partition(tmp_path, dataset, DAY, rows=3000, rows_per_file=1000)
    result = validate_partition(dataset, str(DAY), _files(summary.path))
    assert result.failures == ()
    assert sum(f.rows for f in result.files) == 3000
    assert all(f.evaluated >= 15 for f in result.files)


@pytest.fixture
def env(tmp_path, s3_endpoint, s3_client):
    local = LocalEnv(tmp_path / "env", s3_endpoint)
    local.prepare()
    for key in landing.list_keys(s3_client, US_BUCKET, ""):
        s3_client.delete_object(Bucket=US_BUCKET, Key=key)
    return local


def _telemetry(env: LocalEnv, day: date = DAY, rows: int = 3000) -> Path:
    return synthetic.generate_partition(
        env.source, TELEMETRY, day, rows=rows, rows_per_file=1000
    ).path


def _rewrite(path: Path, change) -> None:
    pq.write_table(change(pq.read_table(path)), path)


def _set(table: pa.Table, column: str, values: list, kind: pa.DataType | None = None) -> pa.Table:
    index = table.schema.get_field_index(column)
    kind = kind or table.schema.field(column).type
    return table.set_column(index, pa.field(column, kind, nullable=True), pa.array(values, kind))


def _patch(column: str, rows: dict[int, object], kind: pa.DataType | None = None):
    def change(table: pa.Table) -> pa.Table:
        values = table.column(column).to_pylist()
        for row, value in rows.items():
            values[row] = value
        return _set(table, column, values, kind)

    return change


def _validate(env: LocalEnv, run_id: str = "run-1", day: date = DAY) -> dict:
    cfg = env.settings()
    extracted = steps.extract(cfg, TELEMETRY, str(day), run_id)
    return steps.validate(cfg, extracted, run_id)


def _ledger_row(env: LocalEnv, day: date = DAY) -> dict:
    return ledger.latest_attempt(ledger.connect(env.ledger_url), TELEMETRY, str(day))


CRITICAL_DEFECTS = {
    "nulls in a key": (
        _patch("vin", {3: None, 4: None}),
        "expect_column_values_to_not_be_null on vin (2 unexpected)",
    ),
    "duplicate id in a file": (
        lambda t: _patch("event_id", {1: t.column("event_id")[0].as_py()})(t),
        "expect_column_values_to_be_unique on event_id (2 unexpected)",
    ),
    "renamed column": (
        lambda t: t.rename_columns(["odo_km" if c == "odometer_km" else c for c in t.column_names]),
        "renamed odometer_km → odo_km",
    ),
    "retyped column": (
        lambda t: _set(
            t, "speed_kmh", [str(v) for v in t.column("speed_kmh").to_pylist()], pa.string()
        ),
        "expect_column_values_to_be_of_type on speed_kmh",
    ),
    "timestamp from another day": (
        lambda t: _set(
            t,
            "event_time",
            [
                v + timedelta(days=1) if i == 5 else v
                for i, v in enumerate(t.column("event_time").to_pylist())
            ],
        ),
        "expect_column_values_to_be_between on event_time (1 unexpected)",
    ),
    "position outside China": (
        _patch("lon_gcj02", {7: -74.0}),  # New York
        "expect_column_values_to_be_between on lon_gcj02 (1 unexpected)",
    ),
    "empty file": (lambda t: t.slice(0, 0), "expect_table_row_count_to_be_between: 0 rows"),
}


@pytest.mark.parametrize("defect", CRITICAL_DEFECTS)
def test_critical_defect_quarantines_the_partition(env, defect):
    change, message = CRITICAL_DEFECTS[defect]
    folder = _telemetry(env)
    _rewrite(folder / "part-00001.parquet", change)
    with pytest.raises(QualityFailed) as err:
        _validate(env)
    text = str(err.value)
    assert text.startswith(f"dataset {TELEMETRY}, day {DAY}, file ")
    assert "part-00001.parquet" in text
    assert message in text
    row = _ledger_row(env)
    assert row["state"] == "failed"
    assert row["error"].startswith("quality_failed:")
    critical = row["quality"]["critical"]
    assert critical and all(f["severity"] == "critical" for f in critical)
    assert row["quality"]["status"] == "failed"
    assert Path(row["quality"]["report"]).is_file()
    assert landing.list_keys(env.s3_client(), US_BUCKET, "") == []


def test_personal_values_are_masked_in_the_ledger_and_every_report(env):
    folder = _telemetry(env)
    bad_vin = "lsg-not-a-vin-1234"
    _rewrite(folder / "part-00000.parquet", _patch("vin", {2: bad_vin}))
    with pytest.raises(QualityFailed):
        _validate(env)
    [failure] = [f for f in _ledger_row(env)["quality"]["critical"] if f["column"] == "vin"]
    assert failure["sample"] == ["l" + "*" * (len(bad_vin) - 2) + "4"]
    assert bad_vin not in json.dumps(_ledger_row(env)["quality"])
    reports = Path(_ledger_row(env)["quality"]["report"]).parent
    pages = [p.read_text(encoding="utf-8") for p in reports.glob("*.html")]
    assert len(pages) == 4  # the index and one Data Docs page per file
    assert not any(bad_vin in page for page in pages)
    assert any("l" + "*" * (len(bad_vin) - 2) + "4" in page for page in pages)


@pytest.fixture(params=["one bucket", "six buckets"])
def buckets(request, monkeypatch):
    """Whole-partition checks spill rows to buckets: 3000 rows in 500-row buckets too."""
    if request.param == "six buckets":
        monkeypatch.setattr(spill, "ROWS_PER_BUCKET", 500)


def test_duplicates_across_files_are_caught_for_the_partition(env, buckets):
    folder = _telemetry(env)
    first_id = pq.read_table(folder / "part-00000.parquet").column("event_id")[0].as_py()
    _rewrite(folder / "part-00002.parquet", _patch("event_id", {0: first_id}))
    with pytest.raises(QualityFailed) as err:
        _validate(env)
    assert "partition: partition_values_unique_across_files on event_id (2 unexpected)" in str(
        err.value
    )


def test_out_of_range_values_warn_and_the_export_goes_on(env):
    folder = _telemetry(env)
    _rewrite(folder / "part-00000.parquet", _patch("speed_kmh", {0: 420.0, 1: 999.0}))
    summary = _validate(env)
    assert summary["status"] == "passed"
    [warning] = summary["warnings"]
    assert (warning["expectation"], warning["column"], warning["severity"]) == (
        "expect_column_values_to_be_between",
        "speed_kmh",
        "warning",
    )
    assert warning["unexpected_count"] == 2
    assert _ledger_row(env)["quality"]["warnings"][0]["column"] == "speed_kmh"
    events = ledger.list_events(ledger.connect(env.ledger_url), TELEMETRY, str(DAY))
    alert = next(e["detail"] for e in events if e["kind"] == "alert")
    assert alert["kind"] == "quality_warning"
    assert "speed_kmh (2 unexpected)" in alert["cause"]


def test_odometer_going_backwards_for_a_vehicle_is_a_warning(env, buckets):
    folder = _telemetry(env)
    table = pq.read_table(folder / "part-00000.parquet")
    vin = table.column("vin")[0].as_py()
    rows = [i for i, v in enumerate(table.column("vin").to_pylist()) if v == vin]
    latest = max(rows, key=lambda i: table.column("event_time")[i].as_py())
    _rewrite(folder / "part-00000.parquet", _patch("odometer_km", {latest: 0.5}))
    summary = _validate(env)
    [warning] = summary["warnings"]
    assert warning["expectation"] == "partition_values_monotonic_per_group"
    assert warning["sample"] == [vin[0] + "*" * 15 + vin[-1]]  # VINs are personal: masked


@pytest.mark.parametrize("span", [86_400_000, 2**62], ids=["one day", "overflowing"])
def test_rows_ordered_by_group_then_time_as_lexsort_orders_them(span):
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 2**64 - 1, 300, dtype=np.uint64)[rng.integers(0, 300, 20_000)]
    when = rng.integers(-span, span, 20_000, dtype=np.int64)
    when[rng.random(20_000) < 0.3] = 0  # ties in time, kept in row order
    order = by_group_then_time(groups, when)
    group_of = groups[order]
    changes = np.flatnonzero(group_of[1:] != group_of[:-1])
    assert len(changes) == 299  # each group's rows together
    # Each group's rows in the same order as lexsort's (by time, ties by row).
    regrouped = order[np.argsort(group_of, kind="stable")]
    assert np.array_equal(regrouped, np.lexsort((when, groups)))
    assert len(by_group_then_time(groups[:0], when[:0])) == 0


def test_a_60_percent_drop_in_volume_warns(env):
    for back in range(7, 0, -1):
        day = DAY - timedelta(days=back)
        _telemetry(env, day)
        _validate(env, run_id=f"run-{day}", day=day)
    _telemetry(env, DAY, rows=1200)
    summary = _validate(env)
    volume = [
        w
        for w in summary["warnings"]
        if w["expectation"] == "partition_volume_within_trailing_range"
    ]
    assert [w["column"] for w in volume][:1] == ["rows"]
    assert (
        "rows 1,200 is -60% against the median 3,000 of the last 7 partitions"
        in volume[0]["detail"]
    )
    assert _ledger_row(env)["quality"]["warnings"] == summary["warnings"]
    events = ledger.list_events(ledger.connect(env.ledger_url), TELEMETRY, str(DAY))
    [alert] = [e["detail"] for e in events if e["detail"].get("kind") == "quality_warning"]
    assert "partition_volume_within_trailing_range on rows" in alert["cause"]


def test_empty_partition_is_refused_before_validation(env):
    folder = env.source / TELEMETRY / f"dt={DAY}"
    folder.mkdir(parents=True)
    (folder / "_SUCCESS").touch()
    with pytest.raises(PartitionInvalid, match="no part files"):
        steps.extract(env.settings(), TELEMETRY, str(DAY), "run-1")
    assert _ledger_row(env)["state"] == "failed"


def test_schema_drift_is_named():
    expected = ["a", "b", "c", "d"]
    assert schema_drift(expected, ["a", "x", "c", "d"]) == "renamed b → x"
    assert schema_drift(expected, ["a", "b", "c"]) == "missing d"
    assert schema_drift(expected, ["a", "b", "c", "d", "e"]) == "unexpected e"
    assert schema_drift(expected, ["a", "c", "b", "d"]) == "columns are out of order"


def test_volume_needs_history_and_respects_the_tolerance():
    config = {"tolerance": 0.5, "severity": "warning"}
    history = [{"rows": 1000, "subjects": 10}] * 7
    assert volume_failures(1000, 10, history[:2], config) == []
    assert volume_failures(1400, 10, history, config) == []
    [found] = volume_failures(1600, 10, history, config)
    assert (found.column, found.severity) == ("rows", "warning")
    assert volume_failures(1000, 3, history, {**config, "severity": "critical"})[0].severity == (
        "critical"
    )


def test_quality_report_link_opens_the_rendered_data_docs(env):
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from crossborder.export_dag import QualityReportLink
    from crossborder.reports import URL_PREFIX, create_app

    run_id = "scheduled__2026-11-23T18:00:00+00:00"
    folder = _telemetry(env)
    _rewrite(folder / "part-00001.parquet", _patch("vin", {3: None}))
    with pytest.raises(QualityFailed):
        _validate(env, run_id=run_id)
    ti_key = SimpleNamespace(dag_id=f"cn_export_{TELEMETRY}", run_id=run_id)
    link = QualityReportLink().get_link(None, ti_key=ti_key)
    assert link.startswith(f"{URL_PREFIX}/{TELEMETRY}/")
    client = TestClient(create_app(lambda: env.staging))
    index = client.get(link.removeprefix(URL_PREFIX))
    assert index.status_code == 200
    assert "FAILED: nothing of this partition leaves China" in index.text
    assert "expect_column_values_to_not_be_null on vin (1 unexpected)" in index.text
    page = client.get(link.removeprefix(URL_PREFIX).replace("index.html", "part-00001.html"))
    assert page.status_code == 200
    assert "Data documentation compiled by Great Expectations" in page.text
    assert "values must never be null" in page.text
    assert "1 unexpected values found" in page.text
    assert "https://" not in page.text.split("<body")[0]  # no assets fetched from outside
    assert client.get("/../../keys/us_recipient_private.pem").status_code == 404


@pytest.mark.parametrize("dataset", synthetic.DATASETS)
def test_every_suite_loads_strictly(dataset):
    from crossborder.quality import load_suite, validation_definition

    suite = load_suite(dataset)
    assert validation_definition(suite).suite.expectations  # raises if GX dropped any


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["expectations"][3].update(severity="CRITICAL"), "unknown severities"),
        (
            lambda s: s["meta"]["partition_checks"][0].update(severity="blocker"),
            "unknown severities",
        ),
        (
            lambda s: s["expectations"][3].update(type="expect_column_values_to_be_grand"),
            "understood",
        ),
    ],
)
def test_a_suite_typo_fails_closed(tmp_path, edit, message):
    suite = json.loads(suite_path(TELEMETRY).read_text())
    edit(suite)
    (tmp_path / f"{TELEMETRY}.raw.json").write_text(json.dumps(suite))
    summary = synthetic.generate_partition(tmp_path / "src", TELEMETRY, DAY, rows=100)
    with pytest.raises(QualityFailed, match=message):
        validate_partition(TELEMETRY, str(DAY), _files(summary.path), directory=tmp_path)


def test_null_in_a_non_key_column_is_critical(env):
    folder = _telemetry(env)
    _rewrite(folder / "part-00002.parquet", _patch("lat_gcj02", {9: None}))
    with pytest.raises(QualityFailed, match="expect_column_values_to_not_be_null on lat_gcj02"):
        _validate(env)


def test_renamed_subject_column_is_quarantined_with_its_report(env):
    folder = _telemetry(env)
    rename = lambda t: t.rename_columns(["car" if c == "vin" else c for c in t.column_names])  # noqa: E731
    _rewrite(folder / "part-00001.parquet", rename)
    with pytest.raises(QualityFailed, match="renamed vin → car"):
        _validate(env)
    assert Path(_ledger_row(env)["quality"]["report"]).is_file()
