"""CAC review: what the approvers see, who may approve, and what counts as an approval.

A partition routed ``cac_review`` is handed over by its daily run (the ledger keeps the
hand-over: what was staged, checked and decided) and a ``cn_cac_review`` run opens two
gates in the Airflow UI. Four eyes: two different approvers from the configured list,
neither the person who triggered the review, each entering a CAC assessment or filing
reference in the format the configuration sets. Anything else (a rejection, a timeout,
a missing or malformed reference, the same person twice) means nothing is uploaded.
The upload checks the approvals recorded in the ledger again, whatever it is told.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from crossborder.errors import ExportRefused, PolicyInvalid
from crossborder.policy import REPO_ROOT, parse_duration

APPROVE, REJECT = "Approve", "Reject"
HANDOVER_EVENT = "review_handover"


@dataclass(frozen=True)
class ReviewConfig:
    approvers: tuple[dict[str, str], ...]  # {"id", "name"} as the auth manager knows them
    approvals_required: int
    response_timeout: timedelta
    remind_after: timedelta
    reference_pattern: str

    @property
    def approver_ids(self) -> set[str]:
        return {a["id"] for a in self.approvers}

    def reference_is_valid(self, reference: Any) -> bool:
        return (
            isinstance(reference, str)
            and re.fullmatch(self.reference_pattern, reference) is not None
        )


def config_path() -> Path:
    return Path(
        os.environ.get("CROSSBORDER_REVIEW_CONFIG", REPO_ROOT / "rules" / "cac_review.yaml")
    )


def load_config(path: Path | None = None) -> ReviewConfig:
    """Read the review configuration; a wrong one is a PolicyInvalid naming the file."""
    path = path or config_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        approvers = tuple({"id": str(a["id"]), "name": str(a["name"])} for a in raw["approvers"])
        config = ReviewConfig(
            approvers=approvers,
            approvals_required=int(raw.get("approvals_required", 2)),
            response_timeout=parse_duration(raw.get("response_timeout", "7d")),
            remind_after=parse_duration(raw.get("remind_after", "2d")),
            reference_pattern=str(raw["reference_pattern"]),
        )
        re.compile(config.reference_pattern)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, re.error) as exc:
        raise PolicyInvalid(f"review configuration: {exc}", file=str(path)) from None
    names = {a["name"] for a in config.approvers}
    if config.approvals_required != 2 or min(len(config.approver_ids), len(names)) < 2:
        raise PolicyInvalid(
            "review configuration: four eyes need approvals_required: 2 (the review DAG has "
            "two gates) and at least two approvers with distinct ids and names "
            f"(found {len(config.approver_ids)} ids, {len(names)} names)",
            file=str(path),
        )
    return config


# --- the decision on a gate's answer ------------------------------------------------------


@dataclass(frozen=True)
class Approval:
    by: str
    at: str
    cac_reference: str

    def to_dict(self) -> dict[str, str]:
        return {"by": self.by, "at": self.at, "cac_reference": self.cac_reference}


def judge_answer(
    answer: dict[str, Any],
    config: ReviewConfig,
    *,
    excluded: set[str],
) -> tuple[Approval | None, str]:
    """(the approval, "") when the gate's answer is a valid approval, else (None, why not).

    ``answer`` is what a HITL gate returns: chosen_options, params_input,
    responded_by_user ({"id", "name"}, None on timeout) and responded_at.
    """
    user = answer.get("responded_by_user") or None
    params = answer.get("params_input") or {}
    chosen = answer.get("chosen_options") or []
    if user is None:
        return None, "no answer before the response timeout (a timeout rejects)"
    who = str(user.get("id"))
    if chosen != [APPROVE]:
        reason = (params.get("reason") or "").strip() or "no reason given"
        return None, f"rejected by {who}: {reason}"
    if who not in config.approver_ids:
        return None, f"{who} is not a configured approver"
    if who in excluded or user.get("name") in excluded:
        return None, f"{who} may not approve twice or approve a review they triggered"
    reference = params.get("cac_reference")
    if not config.reference_is_valid(reference):
        return None, f"{who} approved without a valid CAC reference ({config.reference_pattern})"
    return Approval(who, str(answer.get("responded_at")), str(reference)), ""


def valid_approvals(
    approvals: list[dict[str, Any]], config: ReviewConfig, excluded: set[str] = frozenset()
) -> list[dict[str, Any]]:
    """The approvals that count: configured approvers with a valid reference, each once,
    never anyone excluded (who triggered the review)."""
    counted: dict[str, dict[str, Any]] = {}
    for approval in approvals:
        who = str(approval.get("by"))
        if (
            who in config.approver_ids
            and who not in excluded
            and config.reference_is_valid(approval.get("cac_reference"))
        ):
            counted.setdefault(who, approval)
    return list(counted.values())


def require_approved(
    approvals: list[dict[str, Any]],
    config: ReviewConfig,
    *,
    dataset: str,
    day: str,
    excluded: set[str] = frozenset(),
) -> list[dict[str, Any]]:
    """The recorded approvals if they satisfy four eyes; ExportRefused otherwise."""
    counted = valid_approvals(approvals, config, excluded)
    if len(counted) < config.approvals_required:
        raise ExportRefused(
            f"route cac_review needs {config.approvals_required} recorded approvals by different "
            f"approvers with a CAC reference; the ledger holds {len(counted)}",
            dataset=dataset,
            day=day,
        )
    return counted


# --- what the approver reads ---------------------------------------------------------------


def subject(case: dict[str, Any]) -> str:
    return (
        f"CAC review: {case['dataset']} {case['day']} "
        f"({case['rows']:,} rows would leave for the U.S.)"
    )


def body(case: dict[str, Any]) -> str:
    """Markdown for the gate: everything needed to decide, on one screen."""
    decision, staged = case["decision"], case["staged"]
    verification = case["verification"]
    columns = staged.get("anonymization", {}).get("columns", {})
    leaving = [
        f"| `{name}` | {rule['class']} | {rule['transform']}{_options(rule)} |"
        for name, rule in columns.items()
        if rule["transform"] != "drop"
    ]
    reasons = [f"- {r['text']} — rule `{r['rule']}`" for r in decision["reasons"]]
    quality = case["quality"]
    k = verification.get("k_anonymity") or {}
    findings = sum(n for found in verification.get("pii", {}).values() for n in found.values())
    return "\n".join(
        [
            f"**Dataset** `{case['dataset']}` · **Shanghai day** {case['day']} · "
            f"**rows** {case['rows']:,} of {case['rows_in']:,} extracted · "
            f"**files** {len(staged['files'])}",
            "",
            "### Why review is needed",
            *reasons,
            "",
            "### Columns that would leave",
            "| column | class | transform |",
            "|---|---|---|",
            *leaving,
            "",
            "### Checks",
            f"- Quality suite `{quality.get('suite')}`: **{quality.get('status')}**"
            f" ({len(quality.get('warnings', []))} warnings)",
            f"- Anonymization verification: **{verification.get('status')}**; PII findings in "
            f"exported strings: {findings}; k achieved {k.get('k_achieved', 'n/a')} "
            f"(k = {k.get('k', 'n/a')}, {k.get('rows_below_k', 0):,} rows in smaller groups)",
            f"- Policy `{decision['policy_version'][:19]}…`",
            "",
            "### To approve",
            "Enter the CAC security-assessment or filing reference (e.g. `CAC-SA-2026-000123`) "
            "and choose **Approve**. Two different approvers must approve; the person who "
            "triggered this review may not. To reject, give a reason and choose **Reject**.",
        ]
    )


def _options(rule: dict[str, Any]) -> str:
    options = rule.get("options") or {}
    return " (" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")" if options else ""


def case_from_handover(handover: dict[str, Any]) -> dict[str, Any]:
    """The small summary the gates render, from what the daily run handed over."""
    staged = handover["staged"]
    return {
        "dataset": staged["dataset"],
        "day": staged["day"],
        "rows": staged["rows"],
        "rows_in": handover["extracted"]["rows"],
        "staged": staged,
        "quality": handover["quality"],
        "verification": handover["verification"],
        "decision": handover["decision"],
    }
