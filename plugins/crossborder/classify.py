"""Route decision for a partition: ``cleared``, ``cac_review`` or ``blocked``.

Every reason cites the rule that produced it. When in doubt the decision fails closed:
anything not positively cleared is blocked.
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
    reasons: tuple[Reason, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(data["route"], tuple(Reason(**r) for r in data["reasons"]))


def classify(policy: Policy, quality_passed: bool, staged_rows: int | None) -> Decision:
    if not policy.is_active:
        return Decision(
            "blocked", (Reason("policy.status", "no complete policy yet (policy is a draft)"),)
        )
    if not quality_passed:
        return Decision("blocked", (Reason("quality.raw", "the quality suite did not pass"),))
    if staged_rows is None:
        return Decision("blocked", (Reason("anonymize", "the partition was not staged"),))
    exported = [c for c in policy.columns if c.transform != "drop"]
    if any(c.data_class != "none" for c in exported):
        return Decision(
            "blocked",
            (Reason("rules.personal", "personal or important data without an export route"),),
        )
    return Decision(
        "cleared",
        (
            Reason(
                "rules.exempt_no_personal_data",
                f"scenario {policy.scenario}: every exported column is class 'none' "
                "(no personal information, no important data)",
            ),
        ),
    )
