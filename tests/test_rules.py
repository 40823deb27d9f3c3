"""The export rules file: it loads, it is versioned, and a broken file is refused clearly."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from crossborder.errors import PolicyInvalid, RulesInvalid
from crossborder.policy import load_policy, policy_files
from crossborder.rules import load_rules, rules_file


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = rules_file().read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "export_rules.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def test_shipped_rules_load_and_their_version_is_the_hash_of_the_file():
    rules = load_rules()
    digest = hashlib.sha256(rules_file().read_bytes()).hexdigest()
    assert rules.version == f"sha256:{digest}"
    assert rules.path == rules_file() and rules.path.parent.name == "rules"
    assert set(rules.scenarios) == {
        "production_and_manufacturing",
        "research_development_and_testing",
        "after_sales_service",
        "used_car_trade",
    }
    assert all(
        s.filing.startswith("LG-ICV-") and s.filing_is_demo for s in rules.scenarios.values()
    )
    limits = {t.rule: (t.limit, t.inclusive, t.route) for t in rules.thresholds}
    assert limits == {
        "thresholds.personal.important_data": (100_000, False, "cac_review"),
        "thresholds.personal.security_assessment": (1_000_000, True, "cac_review"),
        "thresholds.sensitive_personal.standard_contract": (0, False, "cac_review"),
        "thresholds.sensitive_personal.security_assessment": (10_000, True, "cac_review"),
    }
    assert rules.categories["charging_network_operation_data"].route == "cac_review"
    assert rules.categories["camera_media"].route == "cac_review"
    assert rules.categories["sensitive_area_geodata"].route == "cac_review"
    assert rules.categories["owner_identity"].route == "blocked"
    assert rules.timezone == "Asia/Shanghai"


@pytest.mark.parametrize("path", policy_files(), ids=lambda p: p.stem)
def test_every_policy_names_a_scenario_and_categories_the_rules_know(path):
    rules, policy = load_rules(), load_policy(path.stem)
    assert policy.scenario in rules.scenarios or policy.scenario == rules.no_legal_route
    assert policy.categories and set(policy.categories) <= set(rules.categories)


def test_rule_ids_are_paths_in_the_file():
    rules = load_rules()
    assert rules.has_rule("thresholds.personal.important_data")
    assert rules.has_rule("categories.camera_media") and rules.has_rule("gates.quality")
    assert not rules.has_rule("thresholds.personal.nothing")
    assert not rules.has_rule("thresholds.personal.important_data.more_than.x")
    assert rules.route_of("gates.small_groups") == "cac_review"
    assert rules.route_of("gates.verification") == "blocked"


def test_the_rules_say_which_transforms_neutralise_sensitive_columns():
    rules = load_rules()
    lat = load_policy("vehicle_telemetry").column("lat_gcj02")  # 0.05° grid
    assert rules.neutralises(lat)
    precise = dataclasses.replace(lat, options={**lat.options, "grid_deg": 0.001})
    assert not rules.neutralises(precise)
    assert rules.neutralises(dataclasses.replace(lat, transform="drop"))
    hourly = dataclasses.replace(lat, transform="generalize_time", options={"unit": "1h"})
    assert rules.neutralises(hourly)
    assert not rules.neutralises(dataclasses.replace(hourly, options={"unit": "15min"}))
    assert not rules.neutralises(dataclasses.replace(lat, transform="keep", options={}))


BROKEN = [
    (
        ("important_data:      {more_than: 100000, route: cac_review}",
         "important_data:      {more_than: 100000, route: cleared}"),
        "thresholds/personal/important_data/route",
    ),
    (
        ("quality:        {route: blocked,", "quality:        {route: cac_review,"),
        "gates/quality/route: 'blocked' was expected",
    ),
    (
        ("security_assessment: {at_least: 10000, route: cac_review}",
         "security_assessment: {route: cac_review}"),
        "thresholds/sensitive_personal/security_assessment",
    ),
    (
        ("categories: [fault_diagnosis_data,", "categories: [fault_diagnostics_data,"),
        "scenarios/after_sales_service: unknown category 'fault_diagnostics_data'",
    ),
    (
        ("categories: [fault_diagnosis_data,", "categories: [charging_network_operation_data,"),
        "'charging_network_operation_data' is important data and cannot be on the general",
    ),
    (
        ("camera_media:\n    class: important", "camera_media:\n    class: fine"),
        "categories/camera_media/class",
    ),
    (
        ("generalize_location: {min_grid_deg: 0.01}", "bucket: {width: 10}"),
        "neutralised_by: Additional properties are not allowed ('bucket' was unexpected)",
    ),
    (("rules_format: 1", "rules_format: 2"), "rules_format: 1 was expected"),
    (("thresholds:\n  personal:", "thresholds:\n  persons:"), "'personal' is a required property"),
    (("scenarios:\n", "scenarios: [\n"), "not valid YAML"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), BROKEN, ids=[m for _, m in BROKEN])
def test_a_broken_rules_file_is_refused_naming_the_file_and_the_problem(tmp_path, change, message):
    path = _variant(tmp_path, *change)
    with pytest.raises(RulesInvalid) as err:
        load_rules(path)
    assert message in str(err.value)
    assert err.value.file == str(path) and f"file {path}" in str(err.value)
    assert err.value.kind == "rules_invalid" and isinstance(err.value, PolicyInvalid)


def test_a_missing_rules_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSBORDER_RULES_FILE", str(tmp_path / "nowhere.yaml"))
    with pytest.raises(RulesInvalid, match="cannot read the rules file"):
        load_rules()
