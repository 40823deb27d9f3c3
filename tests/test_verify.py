"""The independent verification catches what a broken transform or policy lets through."""

from __future__ import annotations

import json
import secrets
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from crossborder import anonymize, synthetic
from crossborder.classify import PartitionFacts, classify
from crossborder.errors import AnonymizationResidue
from crossborder.extract import extract_partition
from crossborder.ledger import YearTotals
from crossborder.policy import load_policy, policies_dir
from crossborder.quality import suite_path
from crossborder.rules import load_rules
from crossborder.verify import verify_partition

DAY = date(2026, 11, 23)
KEY = secrets.token_hex(32).encode()
ROWS = {"vehicle_telemetry": 20_000, "diagnostics": 3_000, "adas_events": 2_000}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify_src")
    for dataset, rows in ROWS.items():
        synthetic.generate_partition(root, dataset, DAY, rows=rows, seed=9)
    return root


def _staged(source: Path, staging: Path, dataset: str, policy=None) -> dict:
    found = extract_partition(source, dataset, str(DAY))
    staged = anonymize.anonymize_partition(policy or load_policy(dataset), found, staging, KEY)
    return {"status": "staged", **staged.to_dict()}


def _classify(policy, staged: dict, verification: dict):
    """Route after a passed quality suite, with no subjects counted yet this year."""
    facts = PartitionFacts({"status": "passed"}, staged, verification)
    return classify(policy, facts, YearTotals(2026, {}), load_rules())


def _residue(policy, staged, report_dir: Path | None = None) -> AnonymizationResidue:
    with pytest.raises(AnonymizationResidue) as caught:
        verify_partition(policy, staged, report_dir)
    return caught.value


def _vins(source: Path, dataset: str) -> list[str]:
    return pq.read_table(source / dataset, columns=["vin"])["vin"].unique().to_pylist()


@pytest.mark.parametrize("dataset", ["vehicle_telemetry", "diagnostics"])
def test_correct_anonymization_passes_every_check(source, tmp_path, dataset):
    policy = load_policy(dataset)
    staged = _staged(source, tmp_path, dataset)
    summary = verify_partition(policy, staged, tmp_path / "report").summary()
    assert summary["status"] == "passed" and summary["residues"] == []
    assert summary["suite"]["status"] == "passed"
    assert summary["suite"]["suite"] == f"{dataset}.anonymized"
    schema = pq.read_schema(staged["files"][0]["path"])
    assert set(summary["pii"]) == {f.name for f in schema if f.type == "string"}
    assert all(n == 0 for found in summary["pii"].values() for n in found.values())
    assert summary["k_anonymity"]["k_achieved"] >= 5
    assert summary["k_anonymity"]["rows_below_k"] == 0
    assert (tmp_path / "report" / "index.html").is_file()


def test_transform_bug_that_leaves_vins_is_caught_and_names_column_and_count(
    source, tmp_path, monkeypatch
):
    monkeypatch.setitem(anonymize.TRANSFORMS, "pseudonymize", anonymize.TRANSFORMS["keep"])
    policy = load_policy("diagnostics")
    staged = _staged(source, tmp_path, "diagnostics")
    error = _residue(policy, staged, tmp_path / "report")
    residues = {
        (r["check"], r["column"], r["detector"]): r["count"] for r in error.result["residues"]
    }
    assert residues[("pii", "vin", "vin")] == staged["rows"]  # every row holds a real VIN
    assert ("suite", "vin", "expect_column_values_to_match_regex") in residues
    assert f"vin: vin in {staged['rows']:,} rows (pii)" in str(error)
    assert "dataset diagnostics, day 2026-11-23" in str(error)
    reports = "".join(p.read_text() for p in (tmp_path / "report").glob("*.html"))
    assert "[redacted]" in reports  # the Data Docs pages show no sample either
    text = str(error) + json.dumps(error.result) + reports
    assert not any(vin in text for vin in _vins(source, "diagnostics"))  # counts, never values
    # classify never clears what failed verification
    staged = {
        "status": "staged",
        "policy_version": policy.version,
        "columns": policy.exported_columns,
    }
    decision = _classify(policy, staged, error.result)
    assert decision.route == "blocked"


def test_policy_that_forgets_to_pseudonymize_vin_is_caught(source, tmp_path):
    folder = tmp_path / "policies"
    shutil.copytree(policies_dir(), folder)
    path = folder / "vehicle_telemetry.yaml"
    text = path.read_text()
    wrong = text.replace(
        "vin:              {class: personal, transform: pseudonymize, options: {namespace: vin}}",
        "vin:              {class: none, transform: keep}",
    ).replace("subject: vin", "subject: trip_id")
    assert wrong != text
    path.write_text(wrong)
    policy = load_policy("vehicle_telemetry", folder)  # a valid policy, wrongly classified
    error = _residue(policy, _staged(source, tmp_path / "stg", "vehicle_telemetry", policy))
    checks = {(r["check"], r["column"]) for r in error.result["residues"]}
    assert ("pii", "vin") in checks and ("suite", "vin") in checks


def test_scrub_bug_leaves_personal_information_in_notes(source, tmp_path, monkeypatch):
    monkeypatch.setitem(anonymize.TRANSFORMS, "scrub_text", anonymize.TRANSFORMS["keep"])
    error = _residue(load_policy("diagnostics"), _staged(source, tmp_path, "diagnostics"))
    found = {r["detector"] for r in error.result["residues"] if r["column"] == "technician_notes"}
    assert {"mobile", "resident_id", "vin", "email", "plate"} <= found
    assert error.result["pii"]["technician_notes"]["mobile"] > 0


def test_skipped_k_anonymity_suppression_is_caught(source, tmp_path, monkeypatch):
    # the suppression pass "forgets" to remove rows
    monkeypatch.setattr(anonymize, "_suppress", lambda run, table: table)
    error = _residue(
        load_policy("vehicle_telemetry"), _staged(source, tmp_path, "vehicle_telemetry")
    )
    (found,) = [r for r in error.result["residues"] if r["check"] == "k_anonymity"]
    assert found["column"] == "event_time,lat_gcj02,lon_gcj02" and found["count"] > 0
    assert error.result["k_anonymity"]["k_achieved"] < 5


def test_positions_inside_sensitive_areas_are_caught(source, tmp_path, monkeypatch):
    monkeypatch.setattr(anonymize, "_in_sensitive_areas", lambda run, table: None)
    error = _residue(
        load_policy("vehicle_telemetry"), _staged(source, tmp_path, "vehicle_telemetry")
    )
    (found,) = [r for r in error.result["residues"] if r["check"] == "sensitive_areas"]
    assert found["count"] > 0 and found["column"] == "lat_gcj02,lon_gcj02"


def test_positions_left_fine_are_caught_by_the_suites_grid_check(source, tmp_path, monkeypatch):
    monkeypatch.setitem(anonymize.TRANSFORMS, "generalize_location", anonymize.TRANSFORMS["keep"])
    monkeypatch.setattr(anonymize, "_suppress", lambda run, table: table)  # else none is left
    staged = _staged(source, tmp_path, "vehicle_telemetry")
    error = _residue(load_policy("vehicle_telemetry"), staged)
    found = {
        r["column"]: r["count"]
        for r in error.result["residues"]
        if r["detector"] == "expect_column_values_to_be_on_grid"
    }
    assert set(found) == {"lat_gcj02", "lon_gcj02"}
    assert all(count > 0.9 * staged["rows"] for count in found.values())


@pytest.mark.parametrize(
    ("step", "values", "expected"),
    [
        (0.05, [31.15, 31.1, 31.0, -0.05, 121.45, 0.0], [True] * 6),
        (0.05, [31.150000000000002, 31.12, 31.151, 1e-05], [False] * 4),
        (0.01, [31.23, 121.47, -33.87, 0.01], [True] * 4),
        (0.01, [31.234, 31.220000000000002, 0.005], [False] * 3),
        (1, [121.0, -3.0, 121.5], [True, True, False]),
    ],
)
def test_grid_check_accepts_only_the_closest_double_to_a_multiple(step, values, expected):
    from crossborder.custom_expectations import on_grid

    assert list(on_grid(np.array(values), step)) == expected


def test_grid_check_agrees_with_the_decimal_text_of_every_coarsened_value():
    from crossborder.custom_expectations import on_grid

    # every multiple of 0.05 within ±180, as anonymize writes them, and a hair off each
    cells = np.arange(-3600, 3601)
    exact = np.array([float(f"{c * 5 / 100:.2f}") for c in cells])
    assert on_grid(exact, 0.05).all()
    assert not on_grid(np.nextafter(exact, np.inf), 0.05).any()
    with pytest.raises(ValueError, match="not a positive decimal"):
        on_grid(exact, 0)


def test_small_groups_sent_to_review_route_the_partition_to_cac_review(source, tmp_path):
    policy = load_policy("adas_events")
    assert policy.anonymity.on_small_groups == "review"
    staged = _staged(source, tmp_path, "adas_events")
    summary = verify_partition(policy, staged).summary()
    assert summary["status"] == "review" and summary["k_anonymity"]["rows_below_k"] > 0
    decision = _classify(policy, staged, summary)
    assert decision.route == "cac_review"
    assert {"categories.camera_media", "gates.small_groups"} <= {r.rule for r in decision.reasons}


def test_missing_anonymized_suite_fails_closed(source, tmp_path, monkeypatch):
    empty = tmp_path / "expectations"
    empty.mkdir()
    shutil.copy(suite_path("diagnostics", "raw"), empty)
    monkeypatch.setenv("CROSSBORDER_EXPECTATIONS_DIR", str(empty))
    error = _residue(load_policy("diagnostics"), _staged(source, tmp_path, "diagnostics"))
    assert "no expectations/diagnostics.anonymized.json" in str(error)


def test_identifier_shapes_of_the_suites_never_match_pseudonyms_or_uuids():
    """A false alarm blocks the export: the shapes must not fire on what legitimately
    leaves, including pseudonyms that happen to contain a label such as "tel" or "id"."""
    import re
    import uuid

    shapes = {
        e["kwargs"]["regex"]
        for path in suite_path("x", "anonymized").parent.glob("*.anonymized.json")
        for e in json.loads(path.read_text(encoding="utf-8"))["expectations"]
        if e["type"] == "expect_column_values_to_not_match_regex"
    }
    assert shapes
    values = [anonymize.pseudonym(KEY, "vin", str(n)) for n in range(20_000)]
    values += [str(uuid.UUID(int=n * 7919)) for n in range(2_000)]
    for label in ("tel", "Tel", "TEL", "id", "ID", "vin", "VIN"):
        for start in range(0, anonymize.PSEUDONYM_LENGTH - len(label) + 1):
            for base in values[:50]:
                values.append((base[:start] + label + base[start:])[: anonymize.PSEUDONYM_LENGTH])
    for shape in shapes:
        pattern = re.compile(shape)
        assert not [v for v in values if pattern.search(v)]


@pytest.mark.parametrize("rows_per_bucket", [2_000_000, 2])
@pytest.mark.parametrize("subject", ["vin", None])
def test_k_recount_matches_a_plain_count_across_files_with_nulls(
    tmp_path, subject, rows_per_bucket, monkeypatch
):
    import dataclasses
    from collections import Counter

    import pyarrow as pa

    from crossborder import spill
    from crossborder.policy import Anonymity
    from crossborder.verify import check_k_anonymity

    monkeypatch.setattr(spill, "ROWS_PER_BUCKET", rows_per_bucket)  # 1 or 5 buckets

    rows = [  # (hour, cell, vin): groups split over two files, nulls as values
        ("h1", "c1", "a"), ("h1", "c1", "b"), ("h1", "c1", "a"), ("h1", None, "c"),
        ("h2", "c1", "a"), ("h1", "c1", "c"), (None, None, None), ("h1", None, "d"),
        ("h2", "c1", "a"), ("h1", "c1", "a"),
    ]  # fmt: skip
    files = []
    for i, part in enumerate((rows[:5], rows[5:])):
        columns = dict(zip(("hour", "cell", "vin"), zip(*part, strict=True), strict=True))
        path = tmp_path / f"part-{i:05d}.parquet"
        pq.write_table(pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()}), path)
        files.append(str(path))
    anonymity = Anonymity(("hour", "cell"), subject, k=3)
    policy = dataclasses.replace(load_policy("vehicle_telemetry"), anonymity=anonymity)

    found = check_k_anonymity(policy, files)

    groups = {(h, c) for h, c, _ in rows}
    if subject:
        sizes = {g: len({v for h, c, v in rows if (h, c) == g}) for g in groups}
    else:
        sizes = Counter((h, c) for h, c, _ in rows)
    row_counts = Counter((h, c) for h, c, _ in rows)
    small = [g for g in groups if sizes[g] < 3]
    assert found["groups"] == len(groups) == 4
    assert found["k_achieved"] == min(sizes.values())
    assert found["groups_below_k"] == len(small)
    assert found["rows_below_k"] == sum(row_counts[g] for g in small)
    assert found["subjects"] == (5 if subject else None)  # a, b, c, d and null
