"""The route decision, table-driven over the rules file and the datasets' real policies."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import precise_location

from crossborder.classify import Decision, PartitionFacts, classify
from crossborder.ledger import SubjectCount, YearTotals
from crossborder.policy import Policy, load_policy
from crossborder.rules import Rules, load_rules, rules_file

YEAR = 2026
PASSED = {"status": "passed"}
VERIFIED = {"status": "passed", "k_anonymity": None}


@pytest.fixture(scope="module")
def rules() -> Rules:
    return load_rules()


def _staged(policy: Policy) -> dict:
    return {
        "status": "staged",
        "policy_version": policy.version,
        "columns": policy.exported_columns,
    }


def _decide(
    policy: Policy,
    rules: Rules,
    personal: tuple[int, int, int] = (0, 0, 0),
    sensitive: tuple[int, int, int] = (0, 0, 0),
    verification: dict = VERIFIED,
    unattributed_rows: int = 0,
) -> Decision:
    """personal / sensitive: (already exported this year, new, subjects in the partition)."""
    facts = PartitionFacts(
        PASSED,
        _staged(policy),
        verification,
        {"personal": personal[2], "sensitive_personal": sensitive[2]},
        unattributed_rows,
    )
    totals = YearTotals(
        YEAR,
        {
            "personal": SubjectCount(personal[0], personal[2] - personal[1], personal[1]),
            "sensitive_personal": SubjectCount(
                sensitive[0], sensitive[2] - sensitive[1], sensitive[1]
            ),
        },
    )
    decision = classify(policy, facts, totals, rules)
    assert all(rules.has_rule(r.rule) for r in decision.reasons), decision.reasons
    assert decision.rules_version == rules.version and decision.policy_version == policy.version
    return decision


def _rules(decision: Decision) -> list[str]:
    return [r.rule for r in decision.reasons]


# Each dataset of DESIGN.md with its real policy: (subjects as above, route, rules cited).
DATASETS = {
    "production_quality": (
        (0, 0, 0),
        "cleared",
        ["scenarios.production_and_manufacturing", "column_classes.none"],
    ),
    "vehicle_telemetry": (
        (40_000, 4_000, 5_000),
        "cleared",
        ["scenarios.research_development_and_testing", "thresholds.personal.important_data"],
    ),
    "diagnostics": (
        (40_000, 1_500, 3_000),
        "cleared",
        ["scenarios.after_sales_service", "thresholds.personal.important_data"],
    ),
    "adas_events": (
        (40_000, 100, 800),
        "cac_review",
        ["categories.camera_media", "column_classes.important"],
    ),
    "charging_sessions": (
        (40_000, 100, 900),
        "cac_review",
        ["categories.charging_network_operation_data", "column_classes.important"],
    ),
    "owner_profiles": ((0, 0, 0), "blocked", ["gates.policy_status"]),
}


@pytest.mark.parametrize("dataset", DATASETS)
def test_each_dataset_gets_its_route_under_the_thresholds(rules, dataset):
    subjects, route, cited = DATASETS[dataset]
    decision = _decide(load_policy(dataset), rules, personal=subjects)
    assert (decision.route, _rules(decision)) == (route, cited)


def test_a_cleared_decision_cites_the_filing_and_gives_the_yearly_figures(rules):
    decision = _decide(load_policy("vehicle_telemetry"), rules, personal=(40_000, 4_000, 5_000))
    listing, threshold = decision.reasons
    assert "filing reference LG-ICV-2024-0002 (DEMO value, not a real filing)" in listing.text
    assert threshold.text == (
        "personal information of 44,000 distinct subjects in 2026 if this partition leaves "
        "(40,000 already exported, 4,000 new of 5,000 in this partition): under the "
        "threshold of more than 100,000"
    )
    assert decision.counts["year"] == YEAR
    assert decision.counts["personal"] == {
        "exported": 40_000,
        "partition": 5_000,
        "new": 4_000,
        "if_exported": 44_000,
        "thresholds": {
            "thresholds.personal.important_data": {"more_than": 100_000},
            "thresholds.personal.security_assessment": {"at_least": 1_000_000},
        },
    }
    assert decision.counts["sensitive_personal"]["thresholds"] == {
        "thresholds.sensitive_personal.standard_contract": {"more_than": 0},
        "thresholds.sensitive_personal.security_assessment": {"at_least": 10_000},
    }


# (already exported, new, in partition) → route and the threshold rules that fired.
IMPORTANT = "thresholds.personal.important_data"
ASSESSMENT = "thresholds.personal.security_assessment"
PERSONAL_CROSSINGS = [
    ((99_000, 999, 2_000), "cleared", []),  # 99,999
    ((99_000, 1_000, 2_000), "cleared", []),  # 100,000 is not "more than 100,000"
    ((99_000, 1_001, 2_000), "cac_review", [IMPORTANT]),  # 100,001
    ((99_999, 2, 2), "cac_review", [IMPORTANT]),  # 100,001
    ((150_000, 0, 10), "cac_review", [IMPORTANT]),  # only known subjects, in a year over it
    ((999_000, 999, 5_000), "cac_review", [IMPORTANT]),  # 999,999
    ((999_000, 1_000, 5_000), "cac_review", [IMPORTANT, ASSESSMENT]),  # 1,000,000
    ((999_999, 2, 2), "cac_review", [IMPORTANT, ASSESSMENT]),  # 1,000,001
]


@pytest.mark.parametrize(("personal", "route", "fired"), PERSONAL_CROSSINGS)
def test_personal_subject_thresholds(rules, personal, route, fired):
    decision = _decide(load_policy("vehicle_telemetry"), rules, personal=personal)
    assert decision.route == route
    if route == "cleared":
        assert _rules(decision)[-1] == IMPORTANT  # cited as the nearest threshold, not crossed
    else:
        assert _rules(decision) == fired
        total = personal[0] + personal[1]
        assert f"personal information of {total:,} distinct subjects" in decision.reasons[0].text
        assert "crossed" in decision.reasons[0].text


@pytest.fixture(scope="module")
def precise_telemetry() -> Policy:
    return precise_location(load_policy("vehicle_telemetry"))


@pytest.fixture(scope="module")
def filed_rules(tmp_path_factory) -> Rules:
    """The rules with a (demo) standard-contract filing for vehicle_telemetry."""
    path = tmp_path_factory.mktemp("rules") / "export_rules.yaml"
    text = rules_file().read_text(encoding="utf-8")
    path.write_text(
        text.replace(
            "standard_contract_filings: {}",
            "standard_contract_filings: {vehicle_telemetry: SC-DEMO-2026-0001}",
        ),
        encoding="utf-8",
    )
    return load_rules(path)


CONTRACT = "thresholds.sensitive_personal.standard_contract"
SPI_ASSESSMENT = "thresholds.sensitive_personal.security_assessment"
FILING = "standard_contract_filings.vehicle_telemetry"
SENSITIVE_CROSSINGS = [
    ((9_000, 999, 1_000), "cleared", [FILING]),  # 9,999 with a standard-contract filing
    ((9_000, 1_000, 1_000), "cac_review", [SPI_ASSESSMENT]),  # 10,000
    ((9_999, 2, 2), "cac_review", [SPI_ASSESSMENT]),  # 10,001
]


@pytest.mark.parametrize(("sensitive", "route", "fired"), SENSITIVE_CROSSINGS)
def test_sensitive_subject_thresholds(precise_telemetry, filed_rules, sensitive, route, fired):
    personal = (20_000, sensitive[1], sensitive[2])
    decision = _decide(precise_telemetry, filed_rules, personal=personal, sensitive=sensitive)
    assert decision.route == route
    sensitive_reasons = [r for r in _rules(decision) if "sensitive" in r or r == FILING]
    assert sensitive_reasons == fired
    total = sensitive[0] + sensitive[1]
    assert f"sensitive personal information of {total:,} distinct subjects" in str(decision.reasons)


def test_sensitive_information_without_a_standard_contract_filing_goes_to_review(
    rules, precise_telemetry
):
    decision = _decide(precise_telemetry, rules, personal=(0, 10, 10), sensitive=(0, 1, 1))
    assert (decision.route, _rules(decision)) == ("cac_review", [CONTRACT])
    assert "threshold more than 0 crossed" in decision.reasons[0].text


def test_owner_identity_is_blocked_even_under_an_active_policy(rules):
    active = dataclasses.replace(load_policy("owner_profiles"), status="active")
    decision = _decide(active, rules)
    assert decision.route == "blocked"
    assert _rules(decision) == ["no_legal_route", "categories.owner_identity"]


def _with(policy_name: str, **changes) -> Policy:
    return dataclasses.replace(load_policy(policy_name), **changes)


UNPLACED = [
    ("unknown category", {"categories": ("telepathy_data",)}, "categories"),
    ("no category", {"categories": ()}, "categories"),
    (
        "category not listed for the scenario",
        {"scenario": "research_development_and_testing"},
        "scenarios.research_development_and_testing.categories",
    ),
    ("unknown scenario", {"scenario": "space_tourism"}, "scenarios"),
    ("no subject column", {"anonymity": None}, "counting.uncountable"),
]


@pytest.mark.parametrize(("case", "changes", "rule"), UNPLACED, ids=[c for c, *_ in UNPLACED])
def test_what_the_rules_cannot_place_goes_to_review(rules, case, changes, rule):
    decision = _decide(_with("diagnostics", **changes), rules, personal=(0, 10, 10))
    assert decision.route == "cac_review"
    assert rule in _rules(decision)


def test_a_scenario_without_a_filing_reference_clears_nothing(tmp_path):
    path = tmp_path / "export_rules.yaml"
    text = rules_file().read_text(encoding="utf-8")
    path.write_text(text.replace("{reference: LG-ICV-2024-0001, demo: true}", "{reference: null}"))
    decision = _decide(load_policy("production_quality"), load_rules(Path(path)))
    assert decision.route == "cac_review"
    assert _rules(decision) == ["scenarios.production_and_manufacturing.filing"]


def test_rows_whose_subject_cannot_be_counted_go_to_review(rules):
    decision = _decide(load_policy("diagnostics"), rules, personal=(0, 10, 10), unattributed_rows=3)
    assert (decision.route, _rules(decision)) == ("cac_review", ["counting.uncountable"])
    assert "3 rows with personal information have no vin" in decision.reasons[0].text


def test_small_k_groups_kept_for_review_go_to_review(rules):
    verification = {
        "status": "review",
        "k_anonymity": {
            "k": 5,
            "rows_below_k": 12,
            "groups_below_k": 4,
            "quasi_identifiers": ["event_time", "lat_gcj02", "lon_gcj02"],
        },
    }
    decision = _decide(
        load_policy("vehicle_telemetry"), rules, personal=(0, 10, 10), verification=verification
    )
    assert (decision.route, _rules(decision)) == ("cac_review", ["gates.small_groups"])
    assert decision.reasons[0].text.startswith("12 rows in 4 groups with fewer than k=5")


def test_blocking_outranks_review_and_is_explained_first(rules):
    policy = _with("charging_sessions", categories=("owner_identity", "camera_media"))
    decision = _decide(policy, rules, personal=(0, 10, 10))
    assert decision.route == "blocked"
    assert _rules(decision)[0] == "categories.owner_identity"
    assert "column_classes.important" in _rules(decision)


def test_decision_round_trips_and_reads_decisions_made_before_the_rules_file(rules):
    decision = _decide(load_policy("vehicle_telemetry"), rules, personal=(1, 2, 3))
    assert Decision.from_dict(decision.to_dict()) == decision
    old = {"route": "cleared", "policy_version": "sha256:x", "reasons": []}
    assert Decision.from_dict(old) == Decision("cleared", "sha256:x")


def test_personal_information_whose_subjects_were_not_counted_is_never_cleared(rules):
    policy = load_policy("diagnostics")
    facts = PartitionFacts(PASSED, _staged(policy), VERIFIED)  # no subject counts given
    decision = classify(policy, facts, YearTotals(YEAR, {}), rules)
    assert decision.route == "cac_review"
    assert [r.rule for r in decision.reasons] == ["counting.uncountable"]
