"""Route decision for a partition: ``cleared``, ``cac_review`` or ``blocked``.

Every reason cites the rule that produced it. When in doubt the decision fails closed:
a failed or missing check blocks; personal information or important data goes to CAC
review; only data with neither is cleared. The decision is bound to the policy version
it was made under; the upload refuses a decision that does not match what was staged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from crossborder.policy import Policy

ROUTES = ("cleared", "cac_review", "blocked")


@dataclass(frozen=True)
class Reason:
    rule: str
    text: str


@dataclass(frozen=True)
class Decision:
    route: str
    policy_version: str
    reasons: tuple[Reason, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        reasons = tuple(Reason(**r) for r in data["reasons"])
        return cls(data["route"], data["policy_version"], reasons)


def classify(
    policy: Policy,
    quality: dict[str, Any],
    staged: dict[str, Any],
    verification: dict[str, Any],
) -> Decision:
    """Route a partition from its policy, its quality and anonymization-verification
    summaries and what was staged."""
    blocked = _blocking_reason(policy, quality, staged, verification)
    if blocked:
        return Decision("blocked", policy.version, (blocked,))
    review = _review_reasons(policy, verification)
    if review:
        return Decision("cac_review", policy.version, tuple(review))
    return Decision("cleared", policy.version, (_cleared_reason(policy),))


def _exported(policy: Policy, *classes: str) -> list[str]:
    return [c.name for c in policy.columns if c.transform != "drop" and c.data_class in classes]


def _blocking_reason(
    policy: Policy, quality: dict[str, Any], staged: dict[str, Any], verification: dict[str, Any]
) -> Reason | None:
    if not policy.is_active:
        return Reason("policy.status", "no complete policy yet (policy is a draft)")
    if policy.scenario == "none":
        return Reason("rules.no_legal_route", "the dataset has no export scenario")
    if quality["status"] == "no_suite":
        return Reason("quality.raw", "no quality suite for this dataset in expectations/")
    if quality["status"] != "passed":
        return Reason("quality.raw", "the quality suite did not pass")
    if staged["status"] != "staged":
        return Reason("anonymize", "the partition was not staged")
    if staged["policy_version"] != policy.version or list(staged["columns"]) != (
        policy.exported_columns
    ):
        return Reason(
            "policy.version",
            f"the policy changed after the data was staged (staged under "
            f"{staged['policy_version']}, now {policy.version}): re-run from anonymize",
        )
    if verification.get("status") not in ("passed", "review"):
        return Reason("anonymize.verify", "the anonymization was not verified")
    return None


def _review_reasons(policy: Policy, verification: dict[str, Any]) -> list[Reason]:
    reasons = []
    personal = _exported(policy, "personal", "sensitive_personal")
    if personal:
        # Pseudonymized data is still personal information (China holds the key): it
        # counts toward the yearly thresholds, which the ledger does not count yet.
        reasons.append(
            Reason(
                "rules.thresholds.uncounted",
                f"personal information leaves, pseudonymized or generalized "
                f"({', '.join(personal)}); the yearly count of its subjects is not kept yet, "
                "so the volume thresholds cannot be checked",
            )
        )
    important = _exported(policy, "important")
    if important:
        reasons.append(
            Reason(
                "rules.important_data",
                f"important data would leave (columns {', '.join(important)}; categories "
                f"{', '.join(policy.categories) or 'none'}): CAC security assessment needed",
            )
        )
    k = verification.get("k_anonymity") or {}
    if verification.get("status") == "review":
        reasons.append(
            Reason(
                "anonymity.k",
                f"{k['rows_below_k']:,} rows in {k['groups_below_k']:,} groups with fewer than "
                f"k={k['k']} subjects over {', '.join(k['quasi_identifiers'])}",
            )
        )
    return reasons


def _cleared_reason(policy: Policy) -> Reason:
    return Reason(
        "rules.exempt_no_personal_data",
        f"scenario {policy.scenario}: every exported column is class 'none' "
        "(no personal information, no important data)",
    )
