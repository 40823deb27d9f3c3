"""Route decision for a partition: ``cleared``, ``cac_review`` or ``blocked``.

``classify`` is a pure function of the dataset's policy, the partition's facts, the
year's subject totals and the export rules (``crossborder.rules``). Every reason cites
the rule of the rules file that produced it and gives the figures. When in doubt the
decision fails closed: a failed or missing check blocks; anything the rules cannot place
goes to CAC review; only data that passes every rule is cleared. The decision is bound
to the policy and rules versions it was made under; the upload refuses a decision that
does not match what was staged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from crossborder.ledger import YearTotals
from crossborder.policy import Policy
from crossborder.rules import SUBJECT_CLASSES, Rules, Threshold

ROUTES = ("cleared", "cac_review", "blocked")  # in order of strictness
_LABELS = {
    "personal": "personal information",
    "sensitive_personal": "sensitive personal information",
}


@dataclass(frozen=True)
class Reason:
    rule: str
    text: str


@dataclass(frozen=True)
class Decision:
    route: str
    policy_version: str
    reasons: tuple[Reason, ...] = field(default_factory=tuple)
    rules_version: str | None = None
    counts: dict[str, Any] | None = None  # the yearly figures per class (see _counts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what XCom, the ledger and the manifest keep."""
        return {**asdict(self), "reasons": [asdict(r) for r in self.reasons]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        reasons = tuple(Reason(**r) for r in data["reasons"])
        return cls(
            data["route"],
            data["policy_version"],
            reasons,
            data.get("rules_version"),
            data.get("counts"),
        )


@dataclass(frozen=True)
class PartitionFacts:
    """What is known about one partition: its step summaries and its subjects."""

    quality: Mapping[str, Any]
    staged: Mapping[str, Any]
    verification: Mapping[str, Any]
    # distinct subjects in the partition per class (personal, sensitive_personal);
    # None: not counted, so personal information in it cannot be cleared
    subjects: Mapping[str, int] | None = None
    unattributed_rows: int = 0  # rows with personal information but no subject to count


@dataclass(frozen=True)
class _Finding:
    route: str
    reason: Reason


def classify(policy: Policy, facts: PartitionFacts, totals: YearTotals, rules: Rules) -> Decision:
    """Route a partition; the strictest finding wins and is explained first."""
    gate = _failed_gate(policy, facts)
    findings = [_Finding("blocked", gate)] if gate else _findings(policy, facts, totals, rules)
    route = max((f.route for f in findings), key=ROUTES.index, default="cleared")
    if route != "cleared":
        findings = sorted(
            (f for f in findings if f.route != "cleared"), key=lambda f: -ROUTES.index(f.route)
        )
    return Decision(
        route,
        policy.version,
        tuple(f.reason for f in findings),
        rules.version,
        _counts(facts, totals, rules),
    )


# --- gates: fail closed before any rule is applied -------------------------------------


def _failed_gate(policy: Policy, facts: PartitionFacts) -> Reason | None:
    quality, staged, verification = facts.quality, facts.staged, facts.verification
    if not policy.is_active:
        return Reason("gates.policy_status", "no complete policy yet (policy is a draft)")
    if quality.get("status") == "no_suite":
        return Reason("gates.quality", "no quality suite for this dataset in expectations/")
    if quality.get("status") != "passed":
        return Reason("gates.quality", "the quality suite did not pass")
    if staged.get("status") != "staged":
        return Reason("gates.staged", "the partition was not staged")
    if staged["policy_version"] != policy.version or list(staged["columns"]) != (
        policy.exported_columns
    ):
        return Reason(
            "gates.policy_version",
            f"the policy changed after the data was staged (staged under "
            f"{staged['policy_version']}, now {policy.version}): re-run from anonymize",
        )
    if verification.get("status") not in ("passed", "review"):
        return Reason("gates.verification", "the anonymization was not verified")
    return None


# --- the rules ----------------------------------------------------------------------------


def _findings(
    policy: Policy, facts: PartitionFacts, totals: YearTotals, rules: Rules
) -> list[_Finding]:
    return [
        *_scenario_findings(policy, rules),
        *_category_findings(policy, rules),
        *_important_column_findings(policy, rules),
        *_personal_findings(policy, facts, totals, rules),
        *_small_group_findings(facts, rules),
    ]


def _scenario_findings(policy: Policy, rules: Rules) -> list[_Finding]:
    name = policy.scenario
    if name == rules.no_legal_route:
        route = rules.route_of("no_legal_route")
        return [_Finding(route, Reason("no_legal_route", "the dataset has no export scenario"))]
    scenario = rules.scenarios.get(name)
    if scenario is None:
        text = f"scenario {name!r} is not a scenario of the Lingang general data list"
        return [_Finding("cac_review", Reason("scenarios", text))]
    if scenario.filing is None:
        text = f"no filing reference for scenario {name!r}: the export is not registered"
        return [_Finding("cac_review", Reason(f"scenarios.{name}.filing", text))]
    demo = " (DEMO value, not a real filing)" if scenario.filing_is_demo else ""
    text = (
        f"Lingang general data list, scenario {scenario.title}, categories "
        f"{', '.join(policy.categories)}; filing reference {scenario.filing}{demo}"
    )
    return [_Finding("cleared", Reason(f"scenarios.{name}", text))]


def _category_findings(policy: Policy, rules: Rules) -> list[_Finding]:
    if not policy.categories:
        text = "the policy names no data category, so the list cannot be checked"
        return [_Finding("cac_review", Reason("categories", text))]
    scenario = rules.scenarios.get(policy.scenario)
    findings = []
    for name in policy.categories:
        category = rules.categories.get(name)
        if category is None:
            text = f"category {name!r} is not in the rules file"
            findings.append(_Finding("cac_review", Reason("categories", text)))
        elif category.route == "blocked":
            text = f"{category.title} ({name}) may never leave China"
            findings.append(_Finding("blocked", Reason(f"categories.{name}", text)))
        elif category.route == "cac_review":
            text = f"important data: {category.title} ({name}); CAC security assessment needed"
            findings.append(_Finding("cac_review", Reason(f"categories.{name}", text)))
        elif scenario is not None and name not in scenario.categories:
            text = f"category {name!r} is not listed for scenario {scenario.name!r}"
            rule = f"scenarios.{scenario.name}.categories"
            findings.append(_Finding("cac_review", Reason(rule, text)))
    return findings


def _exported(policy: Policy, *classes: str) -> list[str]:
    return [c.name for c in policy.columns if c.transform != "drop" and c.data_class in classes]


def _important_column_findings(policy: Policy, rules: Rules) -> list[_Finding]:
    important = _exported(policy, "important")
    if not important:
        return []
    text = f"important data would leave (columns {', '.join(important)})"
    route = rules.route_of("column_classes.important")
    return [_Finding(route, Reason("column_classes.important", text))]


def _personal_findings(
    policy: Policy, facts: PartitionFacts, totals: YearTotals, rules: Rules
) -> list[_Finding]:
    personal = _exported(policy, "personal", "sensitive_personal")
    if not personal:
        if _exported(policy, "important"):
            return []
        text = "no personal information leaves: every exported column is class none"
        return [_Finding("cleared", Reason("column_classes.none", text))]
    if policy.anonymity is None or policy.anonymity.subject is None:
        text = (
            f"personal information leaves ({', '.join(personal)}) but the policy names no "
            "subject column (anonymity.subject) to count it by"
        )
        return [_uncountable(rules, text)]
    if facts.subjects is None:
        return [_uncountable(rules, "the partition's subjects were not counted")]
    findings = [
        finding
        for subject_class in SUBJECT_CLASSES
        if facts.subjects.get(subject_class, 0)
        for finding in _threshold_findings(policy, facts, totals, rules, subject_class)
    ]
    if facts.unattributed_rows:
        text = (
            f"{facts.unattributed_rows:,} rows with personal information have no "
            f"{policy.anonymity.subject}, so their subjects cannot be counted"
        )
        findings.append(_uncountable(rules, text))
    return findings


def _uncountable(rules: Rules, text: str) -> _Finding:
    return _Finding(rules.route_of("counting.uncountable"), Reason("counting.uncountable", text))


def _threshold_findings(
    policy: Policy, facts: PartitionFacts, totals: YearTotals, rules: Rules, subject_class: str
) -> list[_Finding]:
    """One finding per crossed threshold; if none is crossed, the nearest one, cleared."""
    figures = _figures(facts, totals, subject_class)
    total = totals.of(subject_class).if_exported
    thresholds = [t for t in rules.thresholds if t.subject_class == subject_class]
    findings = []
    for threshold in (t for t in thresholds if t.crossed(total)):
        filing = rules.standard_contract_filings.get(policy.dataset)
        if threshold.unless_filed and filing:
            text = f"{figures}; standard-contract filing {filing} for {policy.dataset}"
            rule = f"standard_contract_filings.{policy.dataset}"
            findings.append(_Finding("cleared", Reason(rule, text)))
        else:
            text = f"{figures}: threshold {threshold.describe()} crossed"
            findings.append(_Finding(threshold.route, Reason(threshold.rule, text)))
    if findings:
        return findings
    nearest = min(thresholds, key=lambda t: t.limit)
    text = f"{figures}: under the threshold of {nearest.describe()}"
    return [_Finding("cleared", Reason(nearest.rule, text))]


def _figures(facts: PartitionFacts, totals: YearTotals, subject_class: str) -> str:
    count = totals.of(subject_class)
    return (
        f"{_LABELS[subject_class]} of {count.if_exported:,} distinct subjects in "
        f"{totals.year} if this partition leaves ({count.exported:,} already exported, "
        f"{count.new:,} new of {(facts.subjects or {}).get(subject_class, 0):,} in this partition)"
    )


def _small_group_findings(facts: PartitionFacts, rules: Rules) -> list[_Finding]:
    if facts.verification.get("status") != "review":
        return []
    k = facts.verification.get("k_anonymity") or {}
    text = (
        f"{k['rows_below_k']:,} rows in {k['groups_below_k']:,} groups with fewer than "
        f"k={k['k']} subjects over {', '.join(k['quasi_identifiers'])}"
    )
    return [_Finding(rules.route_of("gates.small_groups"), Reason("gates.small_groups", text))]


def _counts(facts: PartitionFacts, totals: YearTotals, rules: Rules) -> dict[str, Any]:
    """The yearly figures the thresholds were checked against, per class."""
    counts: dict[str, Any] = {"year": totals.year}
    for subject_class in SUBJECT_CLASSES:
        count = totals.of(subject_class)
        counts[subject_class] = {
            "exported": count.exported,
            "partition": (facts.subjects or {}).get(subject_class, 0),
            "new": count.new,
            "if_exported": count.if_exported,
            "thresholds": {
                t.rule: _limit(t) for t in rules.thresholds if t.subject_class == subject_class
            },
        }
    return counts


def _limit(threshold: Threshold) -> dict[str, int]:
    return {"at_least" if threshold.inclusive else "more_than": threshold.limit}
