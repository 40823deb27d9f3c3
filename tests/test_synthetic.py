"""The synthetic Shanghai generator, checked on real Parquet files."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from crossborder import geo, synthetic
from crossborder import identifiers as ids
from crossborder.synthetic import DATASETS, generate_day, generate_partition, schema

DAY = date(2026, 11, 23)
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def day_root(tmp_path_factory) -> Path:
    """All six datasets, 3,000 rows each, in three files of 1,000 rows."""
    root = tmp_path_factory.mktemp("source")
    generate_day(root, DAY, rows=3_000, seed=7, rows_per_file=1_000)
    return root


def read(root: Path, dataset: str) -> pa.Table:
    return pq.read_table(synthetic.partition_path(root, dataset, DAY))


def parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet"))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- layout and contract ---------------------------------------------------------


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_file_has_exactly_the_contract_schema(day_root, dataset):
    files = parts(synthetic.partition_path(day_root, dataset, DAY))
    assert [f.name for f in files] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    for file in files:
        assert pq.read_schema(file).equals(schema(dataset))
        assert pq.ParquetFile(file).metadata.num_rows == 1_000
    assert all(not f.nullable for f in schema(dataset))


@pytest.mark.parametrize("dataset", DATASETS)
def test_partition_is_marked_complete_and_holds_no_temp_files(day_root, dataset):
    folder = synthetic.partition_path(day_root, dataset, DAY)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["_SUCCESS", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert (folder / "_SUCCESS").stat().st_size == 0


@pytest.mark.parametrize("dataset", DATASETS)
def test_timestamps_lie_inside_the_shanghai_day(day_root, dataset):
    table = read(day_root, dataset)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=SHANGHAI)
    end = start + timedelta(days=1)
    ts_columns = [f.name for f in table.schema if pa.types.is_timestamp(f.type)]
    assert ts_columns
    for name in ts_columns:
        assert table.schema.field(name).type == pa.timestamp("ms", tz="Asia/Shanghai")
        low, high = pc.min_max(table[name]).values()
        assert start <= low.as_py() and high.as_py() < end, name


def test_success_marker_is_written_only_after_every_part(tmp_path, monkeypatch):
    generate_partition(tmp_path, "adas_events", DAY, rows=300, rows_per_file=100)  # an old run
    folder = synthetic.partition_path(tmp_path, "adas_events", DAY)
    written = []
    real_write = synthetic._write_part

    def spy(part, path, *args):
        assert not (folder / "_SUCCESS").exists(), "a reader could trust a half-written day"
        real_write(part, path, *args)
        written.append(path.name)

    monkeypatch.setattr(synthetic, "_write_part", spy)
    summary = generate_partition(tmp_path, "adas_events", DAY, rows=300, rows_per_file=100)
    assert written == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert (folder / "_SUCCESS").exists()
    assert (summary.files, summary.rows, summary.path) == (3, 300, folder)


def test_replacing_a_partition_leaves_no_stale_parts(tmp_path):
    generate_partition(tmp_path, "production_quality", DAY, rows=3_000, rows_per_file=1_000)
    folder = synthetic.partition_path(tmp_path, "production_quality", DAY)
    (folder / "part-00007.parquet").write_bytes(b"left over by someone")
    summary = generate_partition(tmp_path, "production_quality", DAY, rows=500, rows_per_file=1_000)
    assert sorted(p.name for p in folder.iterdir()) == ["_SUCCESS", "part-00000.parquet"]
    assert summary.files == 1 and pq.read_table(folder).num_rows == 500


def test_zero_rows_still_gives_a_readable_file_with_the_schema(tmp_path):
    summary = generate_partition(tmp_path, "diagnostics", DAY, rows=0)
    table = pq.read_table(summary.path)
    assert table.num_rows == 0 and table.schema.equals(schema("diagnostics"))
    assert (summary.path / "_SUCCESS").exists()


def test_default_row_counts_apply_when_rows_is_not_given(tmp_path):
    summary = generate_partition(tmp_path, "adas_events", DAY)
    assert summary.rows == synthetic.DEFAULT_ROWS["adas_events"] == 2_000
    assert pq.read_table(summary.path).num_rows == 2_000


def test_unknown_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        generate_partition(tmp_path, "weather", DAY)


# --- determinism -----------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    def day_bytes(root: Path, seed: int) -> dict[str, dict[str, bytes]]:
        summaries = generate_day(root, DAY, rows=1_500, seed=seed, rows_per_file=1_000)
        return {s.dataset: folder_bytes(s.path) for s in summaries}

    first, again, other = (
        day_bytes(tmp_path / "a", 1),
        day_bytes(tmp_path / "b", 1),
        day_bytes(tmp_path / "c", 2),
    )
    assert first == again
    for dataset in DATASETS:
        assert first[dataset]["part-00000.parquet"] != other[dataset]["part-00000.parquet"], dataset


def test_another_day_gives_other_rows_from_the_same_fleet(tmp_path):
    today = generate_partition(tmp_path, "vehicle_telemetry", DAY, rows=2_000, seed=3)
    tomorrow = generate_partition(
        tmp_path, "vehicle_telemetry", DAY + timedelta(days=1), rows=2_000, seed=3
    )
    a, b = pq.read_table(today.path), pq.read_table(tomorrow.path)
    assert set(a["vin"].to_pylist()) == set(b["vin"].to_pylist())
    assert set(a["event_id"].to_pylist()).isdisjoint(b["event_id"].to_pylist())
    # The odometer keeps counting from one day to the next.
    last = a.group_by("vin").aggregate([("odometer_km", "max")]).to_pydict()
    first = b.group_by("vin").aggregate([("odometer_km", "min")]).to_pydict()
    start_of_tomorrow = dict(zip(first["vin"], first["odometer_km_min"], strict=True))
    assert all(
        start_of_tomorrow[v] >= km
        for v, km in zip(last["vin"], last["odometer_km_max"], strict=True)
    )


# --- vehicle telemetry ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def telemetry(tmp_path_factory) -> pa.Table:
    """20,000 rows in seven files (200 vehicles)."""
    root = tmp_path_factory.mktemp("telemetry")
    summary = generate_partition(
        root, "vehicle_telemetry", DAY, rows=20_000, seed=11, rows_per_file=3_000
    )
    assert summary.files == 7
    return pq.read_table(summary.path)


def test_odometer_never_decreases_per_vin_even_across_files(telemetry):
    table = telemetry.sort_by([("vin", "ascending"), ("event_time", "ascending")])
    vins = table["vin"].to_numpy(zero_copy_only=False)
    km = table["odometer_km"].to_numpy()
    same_vehicle = vins[1:] == vins[:-1]
    assert same_vehicle.sum() > 19_000
    assert np.all(np.diff(km)[same_vehicle] >= 0)


def test_telemetry_values_stay_in_their_physical_ranges(telemetry):
    expected = {
        "speed_kmh": (0, 180),
        "soc_pct": (0, 100),
        "battery_temp_c": (-20, 60),
        "lat_gcj02": (30.7, 31.6),
        "lon_gcj02": (120.9, 122.0),
    }
    for column, (low, high) in expected.items():
        values = telemetry[column].to_numpy()
        assert values.min() >= low and values.max() <= high, column
    assert set(telemetry["firmware_version"].to_pylist()) <= set(synthetic.FIRMWARE_VERSIONS)
    assert len(set(telemetry["event_id"].to_pylist())) == telemetry.num_rows
    assert pc.count_distinct(telemetry["vin"]).as_py() == 200  # fleet of rows / 100
    assert all(ids.is_valid_vin(v) for v in set(telemetry["vin"].to_pylist()))


def test_trajectories_are_smooth_per_trip(telemetry):
    table = telemetry.sort_by([("trip_id", "ascending"), ("event_time", "ascending")])
    trip = table["trip_id"].to_numpy(zero_copy_only=False)
    seconds = table["event_time"].cast(pa.int64()).to_numpy() / 1000
    lat, lon = table["lat_gcj02"].to_numpy(), table["lon_gcj02"].to_numpy()
    step_km = np.hypot(np.diff(lat) * 110.6, np.diff(lon) * 95.2)
    dt = np.diff(seconds)
    consecutive = (trip[1:] == trip[:-1]) & (dt >= 10)
    implied_kmh = step_km[consecutive] / dt[consecutive] * 3600
    assert consecutive.sum() > 10_000
    assert np.percentile(implied_kmh, 99) < 100 and implied_kmh.max() < 200


def test_some_telemetry_points_fall_inside_the_sensitive_areas(telemetry):
    areas = geo.load_sensitive_areas(geo.DEFAULT_SENSITIVE_AREAS)
    inside = geo.in_sensitive_areas(
        telemetry["lat_gcj02"].to_numpy(), telemetry["lon_gcj02"].to_numpy(), areas
    )
    assert 0 < inside.sum() < 0.2 * telemetry.num_rows
    visitors = set(np.asarray(telemetry["vin"].to_pylist())[inside])
    assert len(visitors) >= 5


def test_sensitive_areas_file_holds_small_demo_polygons():
    document = json.loads(geo.DEFAULT_SENSITIVE_AREAS.read_text(encoding="utf-8"))
    assert document["type"] == "FeatureCollection" and 3 <= len(document["features"]) <= 4
    for area in geo.load_sensitive_areas(geo.DEFAULT_SENSITIVE_AREAS):
        assert area.name.startswith("demo restricted area") and area.category.startswith("demo_")
        ring = area.polygons[0][0]
        assert np.ptp(ring[:, 0]) < 0.05 and np.ptp(ring[:, 1]) < 0.05  # a few km at most
        lat, lon = area.anchor
        assert geo.in_sensitive_areas(np.array([lat]), np.array([lon]), [area])[0]


def test_point_in_polygon_honours_holes_and_multipolygons(tmp_path):
    square = [[121.0, 31.0], [121.1, 31.0], [121.1, 31.1], [121.0, 31.1], [121.0, 31.0]]
    hole = [[121.04, 31.04], [121.06, 31.04], [121.06, 31.06], [121.04, 31.06], [121.04, 31.04]]
    far = [[[121.5, 31.5], [121.6, 31.5], [121.6, 31.6], [121.5, 31.5]]]
    features = [
        {
            "type": "Feature",
            "properties": {"name": "ring"},
            "geometry": {"type": "Polygon", "coordinates": [square, hole]},
        },
        {
            "type": "Feature",
            "properties": {},
            "geometry": {"type": "MultiPolygon", "coordinates": [far]},
        },
    ]
    path = tmp_path / "areas.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    areas = geo.load_sensitive_areas(path)
    lat = np.array([31.02, 31.05, 31.2, 31.52])
    lon = np.array([121.02, 121.05, 121.2, 121.58])
    assert geo.in_sensitive_areas(lat, lon, areas).tolist() == [True, False, False, True]


# --- other datasets ------------------------------------------------------------------------


def test_owner_profiles_hold_valid_china_identifiers_linked_to_fleet_vins(day_root):
    owners = read(day_root, "owner_profiles").to_pydict()
    assert len(set(owners["vin"])) == len(owners["vin"])  # one owner per vehicle
    assert all(map(ids.is_valid_vin, owners["vin"]))
    assert all(map(ids.is_valid_resident_id, owners["resident_id"]))
    assert all(map(ids.is_valid_mobile, owners["mobile"]))
    assert all(map(ids.is_valid_plate, owners["plate"]))
    assert all(a.startswith("上海市") for a in owners["address"])
    assert all("@" in e for e in owners["email"])
    telemetry_vins = set(read(day_root, "vehicle_telemetry")["vin"].to_pylist())
    assert telemetry_vins <= set(owners["vin"])  # the same fleet across datasets


def test_diagnostics_codes_and_categories_follow_the_contract(day_root):
    table = read(day_root, "diagnostics").to_pydict()
    assert all(re.fullmatch(r"[PCBU][0-9A-F]{4}", c) for c in table["fault_code"])
    assert all(re.fullmatch(r"SH-\d{4}", c) for c in table["dealer_code"])
    assert set(table["ecu"]) <= set(synthetic.ECUS) and set(table["severity"]) == set(
        synthetic.SEVERITIES
    )
    assert len(set(table["record_id"])) == len(table["record_id"])


def test_production_quality_has_no_personal_columns_and_consistent_verdicts(day_root):
    table = read(day_root, "production_quality")
    assert not {"vin", "owner_name", "lat_gcj02"} & set(table.column_names)
    rows = table.to_pydict()
    for code, count, passed in zip(
        rows["defect_code"], rows["defect_count"], rows["passed"], strict=True
    ):
        assert (code == "D000") == (count == 0)
        assert not (passed and count)
    assert set(rows["shift"]) == {"A", "B", "C"}


def test_adas_clips_are_referenced_by_event_and_day(day_root):
    table = read(day_root, "adas_events").to_pydict()
    for event_id, uri in zip(table["event_id"], table["clip_uri"], strict=True):
        assert uri == f"cnmedia://clips/2026/11/23/{event_id}.mp4"
    assert set(table["event_type"]) <= set(synthetic.ADAS_EVENT_TYPES)


def test_charging_sessions_end_after_they_start_and_only_add_charge(day_root):
    table = read(day_root, "charging_sessions")
    assert pc.all(pc.greater(table["end_time"], table["start_time"])).as_py()
    assert pc.all(pc.greater_equal(table["end_soc_pct"], table["start_soc_pct"])).as_py()
    assert pc.all(pc.greater(table["energy_kwh"], 0)).as_py()
    assert set(table["connector_type"].to_pylist()) == {"AC", "DC"}


# --- technician notes ------------------------------------------------------------------------

VALIDATORS = {
    "mobile": ids.is_valid_mobile,
    "resident_id": ids.is_valid_resident_id,
    "plate": ids.is_valid_plate,
    "vin": ids.is_valid_vin,
    "email": lambda v: re.fullmatch(r"[\w.]+@[\w.]+", v) is not None,
    "coordinates": lambda v: len(re.findall(r"\d{2,3}\.\d{4,6}", v)) == 2,
    "name": lambda v: re.fullmatch(r"[\u4e00-\u9fff]{2,4}", v) is not None,
}
# Shapes no clean note may contain: long digit runs, e-mail, plates, VIN-like tokens.
PII_LOOKALIKE = re.compile(r"\d{11,}|@|[沪苏浙京粤皖鲁豫川鄂]|\b[0-9A-Za-z]{17}\b|\d+\.\d{4,}")


def test_notes_hide_pii_in_the_requested_share_and_the_rest_is_clean():
    texts, planted = synthetic.notes_with_pii(np.random.default_rng(0), 2_000, 0.2)
    assert abs(np.mean([bool(p) for p in planted]) - 0.2) < 0.01
    for text, items in zip(texts, planted, strict=True):
        for kind, value in items:
            assert value in text and VALIDATORS[kind](value), (kind, value)
        if not items:
            assert not PII_LOOKALIKE.search(text), text
    values = [(kind, value) for items in planted for kind, value in items]
    assert {kind for kind, _ in values} == set(synthetic.PII_KINDS)
    # The hard cases a scanner must handle are all there.
    assert any(k == "mobile" and v.startswith("+86 ") for k, v in values)
    assert any(k == "mobile" and "-" in v for k, v in values)
    assert any(k == "resident_id" and v.endswith("X") for k, v in values)
    assert any(k == "plate" and "·" in v for k, v in values)
    assert any(k == "plate" and len(v.replace("·", "")) == 8 for k, v in values)
    assert any(k == "vin" and v == v.lower() for k, v in values)
    assert any(re.search(r"[\u4e00-\u9fff]", t) for t in texts) and any(
        t.startswith("Customer") for t in texts
    )


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_notes_pii_share_is_exact_for_any_share(share):
    _, planted = synthetic.notes_with_pii(np.random.default_rng(1), 400, share)
    assert sum(bool(p) for p in planted) == round(400 * share)


def test_diagnostics_written_without_pii_have_clean_notes(tmp_path):
    summary = generate_partition(tmp_path, "diagnostics", DAY, rows=1_000, notes_pii_share=0.0)
    notes = pq.read_table(summary.path)["technician_notes"].to_pylist()
    assert not any(PII_LOOKALIKE.search(n) for n in notes)
    summary = generate_partition(tmp_path, "diagnostics", DAY, rows=1_000, notes_pii_share=1.0)
    notes = pq.read_table(summary.path)["technician_notes"].to_pylist()
    assert sum(bool(PII_LOOKALIKE.search(n)) for n in notes) > 700


# --- command line ------------------------------------------------------------------------------


def test_cli_writes_the_selected_datasets_and_prints_one_line_each(tmp_path, capsys):
    argv = [
        "--root",
        str(tmp_path),
        "--date",
        "2026-11-23",
        "--datasets",
        "adas_events",
        "owner_profiles",
    ]
    assert synthetic.main([*argv, "--rows", "250", "--rows-per-file", "100", "--seed", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["adas_events", "owner_profiles"]
    assert "rows=250" in lines[0] and "files=3" in lines[0]
    assert sorted(p.name for p in (tmp_path / "owner_profiles").iterdir()) == ["dt=2026-11-23"]


def test_cli_reports_bad_numbers_as_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        synthetic.main(["--root", str(tmp_path), "--date", "2026-11-23", "--rows", "-1"])
    assert exit_.value.code == 2
    assert "rows and seed must be >= 0" in capsys.readouterr().err


def test_large_files_are_written_in_several_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "ROW_GROUP_ROWS", 300)
    summary = generate_partition(tmp_path, "vehicle_telemetry", DAY, rows=1_000)
    file = pq.ParquetFile(summary.path / "part-00000.parquet")
    assert file.metadata.num_row_groups == 4 and file.metadata.num_rows == 1_000
    assert len(set(file.read()["event_id"].to_pylist())) == 1_000
