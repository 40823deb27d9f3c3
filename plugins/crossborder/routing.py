"""The route decision of a staged partition, counted against the year's subjects.

``decide`` reads the partition's subjects from the staged Parquet files (file by file,
only those columns), then counts, classifies and reserves them in one locked ledger
transaction (``ledger.classify_and_reserve``), so partitions decided at the same time
cannot together slip under a yearly threshold.

Subjects are the distinct values of the policy's ``anonymity.subject`` column (the
pseudonymized VIN: still personal information, China holds the key). A subject counts
as sensitive personal when one of its rows carries a sensitive column that leaves
un-neutralised per the rules file (``column_classes.sensitive_personal.neutralised_by``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from crossborder import ledger
from crossborder.classify import Decision, PartitionFacts, classify
from crossborder.errors import PartitionInvalid
from crossborder.policy import Policy
from crossborder.rules import Rules


@dataclass
class PartitionSubjects:
    """Distinct subject ids of one partition per class, and rows without a subject."""

    by_class: dict[str, set[str]] = field(default_factory=dict)
    unattributed_rows: int = 0

    def counts(self) -> dict[str, int]:
        return {cls: len(ids) for cls, ids in self.by_class.items()}


def decide(
    engine: sa.Engine,
    policy: Policy,
    rules: Rules,
    day: str,
    quality: Mapping[str, Any],
    staged: Mapping[str, Any],
    verification: Mapping[str, Any],
    attempt_id: int,
    *,
    now: datetime | None = None,
) -> Decision:
    """Route the partition; a ``cleared`` route records its new subjects for the year."""
    counted = _counted(policy, staged)
    subjects = partition_subjects(policy, rules, staged, day) if counted else PartitionSubjects()
    facts = PartitionFacts(
        quality,
        staged,
        verification,
        subjects.counts() if counted else None,
        subjects.unattributed_rows,
    )
    return ledger.classify_and_reserve(
        engine,
        export_year(rules, now),
        subjects.by_class,
        attempt_id,
        lambda totals: classify(policy, facts, totals, rules),
    )


def record_approved_export(
    engine: sa.Engine,
    policy: Policy,
    rules: Rules,
    staged: Mapping[str, Any],
    attempt_id: int,
    *,
    now: datetime | None = None,
) -> dict[str, int]:
    """Count a reviewed partition's subjects when it leaves after approval (idempotent).

    Call it before the upload starts: a subject counted for data that then failed to
    leave overstates the year, which is the safe direction. Returns new subjects per class.
    """
    if not _counts_subjects(policy):  # no personal data, or nothing to count it by
        return {}
    subjects = partition_subjects(policy, rules, staged, staged["day"])
    return ledger.record_subjects(engine, export_year(rules, now), subjects.by_class, attempt_id)


def export_year(rules: Rules, now: datetime | None = None) -> int:
    """The calendar year (Shanghai time) the data leaves in: the counting year."""
    zone = ZoneInfo(rules.timezone)
    return (now.astimezone(zone) if now else datetime.now(zone)).year


def _counts_subjects(policy: Policy) -> bool:
    """Does the policy export personal data and name the subject column to count it by?"""
    exports_personal = any(
        c.transform != "drop" and c.data_class in ("personal", "sensitive_personal")
        for c in policy.columns
    )
    return bool(exports_personal and policy.anonymity and policy.anonymity.subject)


def _counted(policy: Policy, staged: Mapping[str, Any]) -> bool:
    """Only a partition staged under this active policy is counted; classify blocks any
    other, and routes uncountable personal data to review."""
    return (
        policy.is_active
        and _counts_subjects(policy)
        and staged.get("status") == "staged"
        and staged.get("policy_version") == policy.version
    )


def sensitive_columns(policy: Policy, rules: Rules) -> list[str]:
    """Exported sensitive personal columns that the rules file does not call neutralised."""
    return [
        c.name
        for c in policy.columns
        if c.data_class == "sensitive_personal" and not rules.neutralises(c)
    ]


def partition_subjects(
    policy: Policy, rules: Rules, staged: Mapping[str, Any], day: str
) -> PartitionSubjects:
    """Read the subject column (and un-neutralised sensitive columns) file by file; the
    distinct ids stay in Arrow until the end, so each becomes a Python string once."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    assert policy.anonymity is not None and policy.anonymity.subject is not None
    subject, sensitive = policy.anonymity.subject, sensitive_columns(policy, rules)
    personal = carrying = pa.array([], pa.string())
    unattributed = 0
    for item in staged["files"]:
        try:
            table = pq.read_table(item["path"], columns=[subject, *sensitive])
        except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
            raise PartitionInvalid(
                f"cannot read the staged subjects: {exc}",
                dataset=policy.dataset,
                day=day,
                file=item["path"],
            ) from None
        ids = table.column(subject).cast(pa.string())
        unattributed += ids.null_count
        personal = _distinct(personal, ids)
        if sensitive:
            carries = functools.reduce(pc.or_, (pc.is_valid(table.column(c)) for c in sensitive))
            carrying = _distinct(carrying, ids.filter(carries))
    found = {"personal": personal, "sensitive_personal": carrying}
    return PartitionSubjects({c: set(ids.to_pylist()) for c, ids in found.items()}, unattributed)


def _distinct(known: Any, ids: Any) -> Any:
    """The distinct non-null ids of ``known`` and ``ids`` together."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.unique(pa.chunked_array([known, *ids.drop_null().chunks], pa.string()))
