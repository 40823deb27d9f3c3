"""Route decision for a partition: ``cleared``, ``cac_review`` or ``blocked``.

Every reason cites the rule that produced it. When in doubt the decision fails closed:
anything not positively cleared is blocked. The decision is bound to the policy version
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


def classify(policy: Policy, quality: dict[str, Any], staged: dict[str, Any]) -> Decision:
    """Route a partition from its policy, its quality summary and what was staged."""
    blocked = _blocking_reason(policy, quality, staged)
    if blocked:
        return Decision("blocked", policy.version, (blocked,))
    return Decision(
        "cleared",
        policy.version,
        (
            Reason(
                "rules.exempt_no_personal_data",
                f"scenario {policy.scenario}: every exported column is class 'none' "
                "(no personal information, no important data)",
            ),
        ),
    )


def _blocking_reason(
    policy: Policy, quality: dict[str, Any], staged: dict[str, Any]
) -> Reason | None:
    if not policy.is_active:
        return Reason("policy.status", "no complete policy yet (policy is a draft)")
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
    exported = [c for c in policy.columns if c.transform != "drop"]
    if any(c.data_class != "none" for c in exported):
        return Reason("rules.personal", "personal or important data without an export route")
    return None
