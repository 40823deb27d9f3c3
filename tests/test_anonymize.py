"""Anonymization transforms on real Parquet partitions: pseudonyms, generalization,
sensitive areas, buckets, allow-list and k-anonymity suppression (no Airflow)."""

from __future__ import annotations

import json
import secrets
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from crossborder import anonymize, geo, synthetic
from crossborder.anonymize import (
    PSEUDONYM_LENGTH,
    anonymize_partition,
    evidence_for_manifest,
    pseudonym,
    pseudonym_key_id,
    pseudonymization_key,
    pseudonyms,
)
from crossborder.errors import KeyUnavailable, PolicyInvalid
from crossborder.extract import SUCCESS_MARKER, extract_partition, partition_path
from crossborder.policy import load_policy, policies_dir
from crossborder.settings import Settings

DAY = date(2026, 11, 23)
SHANGHAI = ZoneInfo("Asia/Shanghai")
# Text, as the secret is stored: a random-bytes key could end in a byte that strip() removes.
KEY = secrets.token_hex(32).encode()


def _stage(source: Path, staging: Path, dataset: str, day: date, key: bytes = KEY, policy=None):
    found = extract_partition(source, dataset, str(day))
    return anonymize_partition(policy or load_policy(dataset), found, staging, key)


def _joined(source: Path, staged, dataset: str, day: date, id_column: str) -> pa.Table:
    """Staged rows next to their source rows (joined on the row's id, which is kept)."""
    raw = pq.read_table(partition_path(source, dataset, str(day)))
    out = pa.concat_tables(pq.read_table(f.path) for f in staged.files)
    out = out.rename_columns([f"out_{c}" if c != id_column else c for c in out.column_names])
    return raw.join(out, id_column, join_type="inner")


@pytest.fixture(scope="module")
def two_days(tmp_path_factory):
    """Telemetry and diagnostics for two days from the same fleet, staged under KEY."""
    root = tmp_path_factory.mktemp("two_days")
    staged = {}
    for day in (DAY, DAY + timedelta(days=1)):
        for dataset, rows in (("vehicle_telemetry", 20_000), ("diagnostics", 2_000)):
            synthetic.generate_partition(root / "src", dataset, day, rows=rows, seed=5)
            staged[dataset, day] = _stage(root / "src", root / "stg", dataset, day)
    return root / "src", staged


def _vin_pseudonyms(source: Path, staged, dataset: str, day: date) -> dict[str, str]:
    id_column = {"vehicle_telemetry": "event_id", "diagnostics": "record_id"}[dataset]
    joined = _joined(source, staged, dataset, day, id_column)
    return dict(zip(joined["vin"].to_pylist(), joined["out_vin"].to_pylist(), strict=True))


def test_pseudonyms_are_identical_across_days_and_datasets(two_days):
    source, staged = two_days
    maps = {key: _vin_pseudonyms(source, s, *key) for key, s in staged.items()}
    seen: dict[str, set[str]] = {}
    for mapping in maps.values():
        for vin, alias in mapping.items():
            seen.setdefault(vin, set()).add(alias)
    assert all(len(aliases) == 1 for aliases in seen.values())
    # Staged in worker processes with a per-partition lookup, yet exactly pseudonym():
    assert all(aliases == {pseudonym(KEY, "vin", vin)} for vin, aliases in seen.items())
    shared = set.intersection(*(set(m) for m in maps.values()))
    assert len(shared) > 50  # the same vehicles appear in both datasets on both days
    aliases = {next(iter(a)) for a in seen.values()}
    assert len(aliases) == len(seen)  # distinct VINs, distinct pseudonyms
    assert all(len(a) == PSEUDONYM_LENGTH and a.isalnum() and a.islower() for a in aliases)


def test_pseudonyms_stay_with_their_rows_in_files_of_many_row_groups(tmp_path):
    """Pseudonyms are looked up for a whole file, then handed out row group by row group."""
    day, source = DAY, tmp_path / "src"
    synthetic.generate_partition(source, "vehicle_telemetry", day, rows=20_000, seed=7)
    for path in partition_path(source, "vehicle_telemetry", str(day)).glob("part-*.parquet"):
        pq.write_table(pq.read_table(path), path, row_group_size=1_537)  # uneven groups
        assert pq.ParquetFile(path).num_row_groups > 2
    staged = _stage(source, tmp_path / "stg", "vehicle_telemetry", day)
    joined = _joined(source, staged, "vehicle_telemetry", day, "event_id")
    assert joined.num_rows > 1_000  # (rows near sensitive areas and in small groups are not)
    for column in ("vin", "trip_id"):
        namespace = load_policy("vehicle_telemetry").column(column).options.get("namespace", column)
        expected = pseudonyms(KEY, namespace, joined[column].to_pylist())
        assert joined[f"out_{column}"].to_pylist() == expected


def test_a_write_that_fails_half_way_leaves_no_file_behind(tmp_path):
    def tables():
        yield pa.table({"vin": ["a", "b"]})  # one row group written...
        raise OSError("no space left on device")  # ...then the disk fills

    target = tmp_path / "part-00000.parquet"
    with pytest.raises(OSError, match="no space left"):
        anonymize._write(target, tables(), lambda: pa.table({"vin": pa.array([], pa.string())}))
    assert list(tmp_path.iterdir()) == []


def test_another_key_gives_other_pseudonyms(two_days, tmp_path):
    source, staged = two_days
    other = _stage(source, tmp_path, "diagnostics", DAY, key=secrets.token_hex(32).encode())
    ours = _vin_pseudonyms(source, staged["diagnostics", DAY], "diagnostics", DAY)
    theirs = _vin_pseudonyms(source, other, "diagnostics", DAY)
    assert ours.keys() == theirs.keys()
    assert all(ours[vin] != theirs[vin] for vin in ours)


def test_pseudonym_is_keyed_hmac_with_a_namespace():
    assert pseudonym(KEY, "vin", "LSGAB12345C678901") == pseudonym(KEY, "vin", "LSGAB12345C678901")
    assert pseudonym(KEY, "vin", "X") != pseudonym(KEY, "trip_id", "X")
    assert pseudonym_key_id(KEY) != pseudonym_key_id(secrets.token_hex(32).encode())
    assert KEY.hex() not in pseudonym_key_id(KEY)


def test_batch_pseudonyms_equal_one_at_a_time():
    """The vectorised base32 must give exactly the pseudonyms already in the U.S. lake."""
    values = ["", "X", "LSGAB12345C678901", "车辆-ü"] + [secrets.token_hex(n) for n in range(40)]
    assert pseudonyms(KEY, "vin", values) == [pseudonym(KEY, "vin", v) for v in values]
    assert pseudonyms(KEY, "vin", []) == []
    assert {len(p) for p in pseudonyms(KEY, "trip_id", values)} == {PSEUDONYM_LENGTH}


def test_key_appears_in_no_evidence_and_no_settings_repr(two_days):
    _, staged = two_days
    item = staged["vehicle_telemetry", DAY]
    assert KEY.hex() not in json.dumps(item.to_dict())
    settings = Settings(Path("."), Path("."), "sqlite://", "b", dict, pseudonymization_key=KEY)
    assert repr(KEY) not in repr(settings) and "pseudonymization_key" not in repr(settings)


def test_times_are_floored_in_shanghai_time(two_days):
    source, staged = two_days
    telemetry = pa.concat_tables(
        pq.read_table(f.path) for f in staged["vehicle_telemetry", DAY].files
    )
    for when in telemetry["event_time"].to_pylist()[:2000]:
        assert (when.minute, when.second, when.microsecond) == (0, 0, 0)
    joined = _joined(source, staged["diagnostics", DAY], "diagnostics", DAY, "record_id")
    for raw, out in zip(
        joined["service_time"].to_pylist(), joined["out_service_time"].to_pylist(), strict=True
    ):
        local = raw.astimezone(SHANGHAI)
        assert out == datetime(local.year, local.month, local.day, tzinfo=SHANGHAI)  # 1d


def test_positions_are_on_the_grid_and_never_inside_a_sensitive_area(two_days):
    source, staged = two_days
    item = staged["vehicle_telemetry", DAY]
    grid = load_policy("vehicle_telemetry").column("lat_gcj02").options["grid_deg"]
    joined = _joined(source, item, "vehicle_telemetry", DAY, "event_id")
    for column in ("out_lat_gcj02", "out_lon_gcj02"):
        cells = joined[column].to_numpy() / grid
        assert np.allclose(cells, np.round(cells), atol=1e-6)
    raw = pq.read_table(partition_path(source, "vehicle_telemetry", str(DAY)))
    areas = geo.load_sensitive_areas(geo.DEFAULT_SENSITIVE_AREAS)
    inside = geo.in_sensitive_areas(raw["lat_gcj02"].to_numpy(), raw["lon_gcj02"].to_numpy(), areas)
    assert inside.sum() > 0  # the generator sends some vehicles into the areas
    kept = set(joined["event_id"].to_pylist())
    assert not kept & set(raw["event_id"].filter(pa.array(inside)).to_pylist())
    evidence = item.anonymization["sensitive_areas"]
    assert evidence["rows_dropped"] >= int(inside.sum())
    assert evidence["sha256"] and evidence["areas"] == len(areas)


def test_odometer_is_bucketed_and_columns_outside_the_policy_never_leave(two_days):
    source, staged = two_days
    item = staged["diagnostics", DAY]
    assert list(item.columns) == load_policy("diagnostics").exported_columns
    joined = _joined(source, item, "diagnostics", DAY, "record_id")
    raw, out = joined["odometer_km"].to_numpy(), joined["out_odometer_km"].to_numpy()
    assert np.array_equal(out, np.floor(raw / 10_000) * 10_000)
    for file in item.files:
        assert pq.read_schema(file.path).names == list(item.columns)


def test_evidence_lists_every_columns_transform_and_the_key_id(two_days):
    _, staged = two_days
    evidence = staged["diagnostics", DAY].anonymization
    policy = load_policy("diagnostics")
    assert evidence["policy_version"] == policy.version
    assert evidence["columns"]["technician_notes"]["transform"] == "scrub_text"
    assert evidence["columns"]["odometer_km"]["options"] == {"width": 10000}
    assert evidence["pseudonym_key_id"] == pseudonym_key_id(KEY)
    assert sum(evidence["scrubbed"].values()) > 0  # the generator plants PII in notes


def test_missing_pseudonymization_key_fails_before_anything_is_staged(two_days, tmp_path):
    source, _ = two_days
    with pytest.raises(KeyUnavailable, match="pseudonymization_key"):
        _stage(source, tmp_path, "diagnostics", DAY, key=None)
    assert not list(tmp_path.rglob("part-*.parquet"))


# --- k-anonymity ------------------------------------------------------------------------

K_POLICY = """
dataset: fleet
status: active
description: k-anonymity test data
schedule: {{export_time: "02:00"}}
legal: {{scenario: research_development_and_testing}}
columns:
  row_id: {{class: none, transform: keep}}
  vin: {{class: personal, transform: pseudonymize}}
  region: {{class: none, transform: keep}}
  hour: {{class: personal, transform: generalize_time, options: {{unit: 1h}}}}
anonymity:
  quasi_identifiers: [region, hour]
  subject: vin
  k: 5
  on_small_groups: {action}
"""


def _groups_partition(root: Path) -> None:
    """Region r has r distinct vehicles (r = 1..7), each with three rows in one hour."""
    vins, regions = [], []
    for region in range(1, 8):
        for vehicle in range(region):
            vins += [f"VIN-{region}-{vehicle}"] * 3
            regions += [f"R{region}"] * 3
    hour = datetime(2026, 11, 23, 9, 30, tzinfo=SHANGHAI)
    table = pa.table(
        {
            "row_id": [str(i) for i in range(len(vins))],
            "vin": vins,
            "region": regions,
            "hour": pa.array([hour] * len(vins), pa.timestamp("ms", tz="Asia/Shanghai")),
        }
    )
    folder = partition_path(root, "fleet", str(DAY))
    folder.mkdir(parents=True)
    pq.write_table(table.slice(0, 40), folder / "part-00000.parquet")
    pq.write_table(table.slice(40), folder / "part-00001.parquet")
    (folder / SUCCESS_MARKER).touch()


@pytest.mark.parametrize("action", ["suppress", "review"])
def test_small_groups_are_suppressed_or_left_for_review(tmp_path, action):
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "fleet.yaml").write_text(K_POLICY.format(action=action))
    _groups_partition(tmp_path / "src")
    policy = load_policy("fleet", tmp_path / "policies")
    staged = _stage(tmp_path / "src", tmp_path / "stg", "fleet", DAY, policy=policy)
    out = pa.concat_tables(pq.read_table(f.path) for f in staged.files)
    k = staged.anonymization["k_anonymity"]
    assert (k["groups"], k["groups_below_k"]) == (7, 4)  # regions 1-4 have < 5 vehicles
    small_rows = 3 * (1 + 2 + 3 + 4)
    if action == "suppress":
        assert k["rows_suppressed"] == small_rows
        assert sorted(set(out["region"].to_pylist())) == ["R5", "R6", "R7"]
        assert staged.rows == 84 - small_rows == sum(f.rows for f in staged.files)
    else:
        assert k["rows_suppressed"] == 0 and staged.rows == 84
    # the staged files are consistent with their descriptions whatever was removed
    assert [pq.ParquetFile(f.path).metadata.num_rows for f in staged.files] == [
        f.rows for f in staged.files
    ]
    assert pc.all(pc.equal(pc.utf8_length(out["vin"]), PSEUDONYM_LENGTH)).as_py()


def test_every_cell_an_area_overlaps_is_withheld_even_by_a_thin_strip():
    # A strip 0.002 degrees high crossing three 0.01-degree cells: no cell corner lies
    # inside it and no vertex lies inside the middle cell, yet all three overlap it.
    ring = np.array([[-0.005, 0.004], [0.015, 0.004], [0.015, 0.006], [-0.005, 0.006]])
    strip = geo.SensitiveArea("strip", "test", ((np.vstack([ring, ring[:1]]),),))
    assert geo.cells_touching([strip], 0.01) == {(0, -1), (0, 0), (0, 1)}
    assert geo.cells_touching([strip], 0.001) >= {(4, 0), (5, 0), (4, 14), (5, 14)}


@pytest.mark.parametrize(
    ("raw", "message"),
    [(None, "not configured"), (b"  \n", "not configured"), (b"short-secret", "12 bytes")],
)
def test_a_missing_or_guessable_key_is_refused(raw, message):
    with pytest.raises(KeyUnavailable, match=message):
        pseudonymization_key(raw, "diagnostics")


def test_key_from_a_secret_file_with_a_newline_gives_the_same_pseudonyms():
    raw = secrets.token_hex(32).encode()
    assert pseudonymization_key(raw + b"\n") == pseudonymization_key(raw) == raw


NULLS_POLICY = """
dataset: nulls
status: active
description: transforms keep nulls
schedule: {export_time: "02:00"}
legal: {scenario: research_development_and_testing}
columns:
  id: {class: none, transform: keep}
  ref: {class: none, transform: pseudonymize}
  at: {class: none, transform: generalize_time, options: {unit: 1d}}
  km: {class: none, transform: bucket, options: {width: 1000}}
  count: {class: none, transform: bucket, options: {width: 10}}
  lat: {class: none, transform: generalize_location, options: {grid_deg: 0.05, axis: lat}}
  lon: {class: none, transform: generalize_location, options: {grid_deg: 0.05, axis: lon}}
sensitive_areas: {file: areas.geojson}
"""


def test_transforms_keep_nulls_and_floor_days_in_shanghai_time(tmp_path):
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "nulls.yaml").write_text(NULLS_POLICY)
    shutil.copy(geo.DEFAULT_SENSITIVE_AREAS, tmp_path / "policies" / "areas.geojson")
    utc = datetime(2026, 11, 22, 17, 30, tzinfo=ZoneInfo("UTC"))  # 01:30 on the 23rd in Shanghai
    table = pa.table(
        {
            "id": ["a", "b"],
            "ref": ["r-1", None],
            "at": pa.array([utc, None], pa.timestamp("ms", tz="UTC")),
            "km": pa.array([12_345.6, None]),
            "count": pa.array([37, None], pa.int32()),
            "lat": pa.array([31.2371, None]),
            "lon": pa.array([121.4737, None]),
        }
    )
    folder = partition_path(tmp_path / "src", "nulls", str(DAY))
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-00000.parquet")
    (folder / SUCCESS_MARKER).touch()
    policy = load_policy("nulls", tmp_path / "policies")
    staged = _stage(tmp_path / "src", tmp_path / "stg", "nulls", DAY, policy=policy)
    out = pq.read_table(staged.files[0].path).to_pylist()
    assert out[0]["at"] == datetime(2026, 11, 23, tzinfo=SHANGHAI)  # Shanghai midnight
    assert (out[0]["km"], out[0]["count"]) == (12_000.0, 30)
    assert (out[0]["lat"], out[0]["lon"]) == (31.2, 121.45)
    assert out[0]["ref"] == pseudonym(KEY, "ref", "r-1")
    assert [out[1][c] for c in ("ref", "at", "km", "count", "lat", "lon")] == [None] * 6


def test_the_manifest_learns_nothing_of_traffic_near_sensitive_areas(two_days):
    _, staged = two_days
    evidence = staged["vehicle_telemetry", DAY].anonymization
    assert evidence["sensitive_areas"]["rows_dropped"] > 0  # kept in the ledger
    shown = evidence_for_manifest(evidence)["sensitive_areas"]
    assert shown == {
        "file": "sensitive_areas.geojson",
        "sha256": evidence["sensitive_areas"]["sha256"],
    }


def test_areas_file_changed_after_the_policy_was_loaded_is_refused(two_days, tmp_path):
    source, _ = two_days
    folder = tmp_path / "policies"
    shutil.copytree(policies_dir(), folder)
    policy = load_policy("vehicle_telemetry", folder)
    (folder / "sensitive_areas.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(PolicyInvalid, match="changed since the policy was loaded"):
        _stage(source, tmp_path / "stg", "vehicle_telemetry", DAY, policy=policy)
