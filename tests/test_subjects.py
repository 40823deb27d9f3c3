"""Yearly distinct subjects in the ledger, and the locked count-classify-reserve, on SQLite
and PostgreSQL; the routing glue on staged Parquet files."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from conftest import precise_location

from crossborder import ledger, routing
from crossborder.classify import PartitionFacts, classify
from crossborder.errors import PartitionInvalid
from crossborder.policy import load_policy
from crossborder.rules import load_rules

YEAR = 2026
DAY = "2026-11-23"


def _attempt(engine, run: str, dataset: str = "vehicle_telemetry") -> int:
    return ledger.begin_attempt(engine, dataset, DAY, run)


def _ids(prefix: str, n: int) -> set[str]:
    return {f"{prefix}{i:07d}" for i in range(n)}


@dataclasses.dataclass(frozen=True)
class _Route:
    route: str
    totals: ledger.YearTotals


def _route(route: str):
    """A decision callback that routes as told and remembers what it was shown."""
    return lambda totals: _Route(route, totals)


def test_counts_subjects_already_recorded_and_new_per_year_and_class(engine):
    first = _attempt(engine, "run-1")
    ledger.record_subjects(engine, YEAR, {"personal": {"a", "b", "c"}}, first)
    found = ledger.count_subjects(engine, YEAR, {"personal": {"b", "c", "d"}})
    assert found.of("personal") == ledger.SubjectCount(exported=3, recorded=2, new=1)
    assert found.of("personal").if_exported == 4
    other_year = ledger.count_subjects(engine, YEAR + 1, {"personal": {"b", "c", "d"}})
    assert other_year.of("personal") == ledger.SubjectCount(0, 0, 3)
    sensitive = ledger.count_subjects(engine, YEAR, {"sensitive_personal": {"b"}})
    assert sensitive.of("sensitive_personal") == ledger.SubjectCount(0, 0, 1)


def test_only_a_cleared_route_reserves_and_a_rerun_of_the_attempt_adds_nothing(engine):
    subjects = {"personal": {"a", "b"}, "sensitive_personal": {"a"}}
    held = _attempt(engine, "run-held")
    ledger.classify_and_reserve(engine, YEAR, subjects, held, _route("cac_review"))
    assert ledger.count_subjects(engine, YEAR, subjects).of("personal").exported == 0

    run = _attempt(engine, "run-1")
    first = ledger.classify_and_reserve(engine, YEAR, subjects, run, _route("cleared"))
    again = ledger.classify_and_reserve(engine, YEAR, subjects, run, _route("cleared"))
    assert first.totals == again.totals  # the attempt's own rows are not "already exported"
    assert first.totals.of("personal") == ledger.SubjectCount(0, 0, 2)
    after = ledger.count_subjects(engine, YEAR, subjects)
    assert after.of("personal") == ledger.SubjectCount(2, 2, 0)
    assert after.of("sensitive_personal") == ledger.SubjectCount(1, 1, 0)

    later = _attempt(engine, "run-2")  # another attempt sees them as exported
    seen = ledger.classify_and_reserve(engine, YEAR, subjects, later, _route("cleared"))
    assert seen.totals.of("personal") == ledger.SubjectCount(2, 2, 0)


def test_an_approved_review_export_is_recorded_once(engine):
    run = _attempt(engine, "run-1", "adas_events")
    subjects = {"personal": {"a", "b", "c"}, "sensitive_personal": set()}
    assert ledger.record_subjects(engine, YEAR, subjects, run) == {
        "personal": 3,
        "sensitive_personal": 0,
    }
    assert ledger.record_subjects(engine, YEAR, subjects, run) == {
        "personal": 0,
        "sensitive_personal": 0,
    }
    assert ledger.count_subjects(engine, YEAR, subjects).of("personal").exported == 3


def test_many_ids_are_counted_in_bounded_queries(engine):
    statements: list[int] = []

    def parameters(conn, cursor, statement, params, context, executemany):
        if not executemany and isinstance(params, dict | tuple | list):
            statements.append(len(params))

    ids = _ids("v", 120_000)
    run = _attempt(engine, "run-1")
    ledger.record_subjects(engine, YEAR, {"personal": set(sorted(ids)[:25_000])}, run)
    sa.event.listen(engine, "before_cursor_execute", parameters)
    try:
        found = ledger.count_subjects(engine, YEAR, {"personal": ids})
    finally:
        sa.event.remove(engine, "before_cursor_execute", parameters)
    assert found.of("personal") == ledger.SubjectCount(25_000, 25_000, 95_000)
    chunk = ledger.SUBJECT_CHUNK[engine.dialect.name]
    assert max(statements) <= chunk + 2  # a chunk of ids, the year and the class


def test_concurrent_decisions_near_a_threshold_clear_exactly_as_many_as_fit(engine):
    """99,950 subjects exported; 8 partitions of 20 new subjects each decided at once:
    only 2 fit under "more than 100,000" (99,990); the other 6 must go to review."""
    policy, rules = load_policy("vehicle_telemetry"), load_rules()
    seed = _attempt(engine, "seed")
    ledger.record_subjects(engine, YEAR, {"personal": _ids("old", 99_950)}, seed)
    staged = {"status": "staged", "policy_version": policy.version}
    staged["columns"] = policy.exported_columns
    facts = PartitionFacts({"status": "passed"}, staged, {"status": "passed"}, {"personal": 20})
    partitions = 8
    attempts = [_attempt(engine, f"run-{i}", f"dataset_{i}") for i in range(partitions)]
    start = threading.Barrier(partitions)

    def decide(totals: ledger.YearTotals):
        time.sleep(0.05)  # widen the window a race would need
        return classify(policy, facts, totals, rules)

    def one(i: int):
        subjects = {"personal": _ids(f"p{i}-", 20), "sensitive_personal": set()}
        start.wait()
        return ledger.classify_and_reserve(engine, YEAR, subjects, attempts[i], decide)

    with ThreadPoolExecutor(max_workers=partitions) as pool:
        decisions = list(pool.map(one, range(partitions)))
    routes = sorted(d.route for d in decisions)
    assert routes == ["cac_review"] * 6 + ["cleared"] * 2
    seen = sorted(d.counts["personal"]["exported"] for d in decisions)
    assert seen == [99_950, 99_970] + [99_990] * 6  # each decision saw the one before it
    final = ledger.count_subjects(engine, YEAR, {"personal": set()}).of("personal").exported
    assert final == 99_990


# --- routing: subjects from staged files, and the decision --------------------------------


def _stage(tmp_path, policy, rows: list[tuple[str | None, float | None, float | None]]):
    """Staged files of (vin, lat, lon) rows, split over two files of two row groups."""
    files = []
    for n, part in enumerate((rows[: len(rows) // 2], rows[len(rows) // 2 :])):
        table = pa.table(
            {
                "vin": pa.array([r[0] for r in part], pa.string()),
                "lat_gcj02": pa.array([r[1] for r in part], pa.float64()),
                "lon_gcj02": pa.array([r[2] for r in part], pa.float64()),
            }
        )
        path = tmp_path / f"part-{n:05d}.parquet"
        pq.write_table(table, path, row_group_size=max(1, len(part) // 2))
        files.append({"name": path.name, "path": str(path)})
    return {
        "status": "staged",
        "dataset": policy.dataset,
        "day": DAY,
        "policy_version": policy.version,
        "columns": policy.exported_columns,
        "files": files,
    }


ROWS = [
    ("v1", 31.20, 121.40),
    ("v2", None, None),  # no position: personal only
    ("v3", 31.30, None),
    (None, 31.00, 121.00),  # no subject: cannot be counted
    ("v1", 31.25, 121.45),
    ("v4", None, None),
]


def test_partition_subjects_per_class_from_the_staged_files(tmp_path):
    rules = load_rules()
    policy = load_policy("vehicle_telemetry")
    found = routing.partition_subjects(policy, rules, _stage(tmp_path, policy, ROWS), DAY)
    assert found.by_class == {"personal": {"v1", "v2", "v3", "v4"}, "sensitive_personal": set()}
    assert found.unattributed_rows == 1
    precise = precise_location(policy)
    assert routing.sensitive_columns(precise, rules) == ["lat_gcj02", "lon_gcj02"]
    found = routing.partition_subjects(precise, rules, _stage(tmp_path, precise, ROWS), DAY)
    assert found.by_class["sensitive_personal"] == {"v1", "v3"}  # rows with a position


def test_an_unreadable_staged_file_is_named_in_the_error(tmp_path):
    policy = load_policy("vehicle_telemetry")
    staged = _stage(tmp_path, policy, ROWS)
    broken = staged["files"][-1]["path"]
    with open(broken, "r+b") as file:
        file.truncate(20)  # cut short, as by a full disk
    with pytest.raises(PartitionInvalid, match="cannot read the staged subjects") as raised:
        routing.partition_subjects(policy, load_rules(), staged, DAY)
    assert (raised.value.dataset, raised.value.day, raised.value.file) == (
        "vehicle_telemetry", DAY, broken
    )  # fmt: skip


def test_decide_counts_classifies_and_reserves_a_staged_partition(engine, tmp_path):
    rules = load_rules()
    policy = load_policy("vehicle_telemetry")
    rows = [r for r in ROWS if r[0]]  # every row has its subject
    staged = _stage(tmp_path, policy, rows)
    run = _attempt(engine, "run-1")
    now = datetime(2026, 12, 31, 16, 30, tzinfo=UTC)  # 00:30 on 1 January 2027 in Shanghai
    args = (engine, policy, rules, DAY, {"status": "passed"}, staged, {"status": "passed"}, run)
    decision = routing.decide(*args, now=now)
    assert decision.route == "cleared" and decision.counts["year"] == 2027
    assert decision.counts["personal"]["new"] == 4
    assert routing.decide(*args, now=now) == decision  # re-run: same figures, nothing added
    recorded = ledger.count_subjects(engine, 2027, {"personal": {"v1", "v2", "v3", "v4"}})
    assert recorded.of("personal") == ledger.SubjectCount(4, 4, 0)
    assert ledger.count_subjects(engine, 2026, {"personal": {"v1"}}).of("personal").exported == 0


def test_a_reviewed_partition_is_counted_when_it_leaves_after_approval(engine, tmp_path):
    rules = load_rules()
    policy = precise_location(load_policy("vehicle_telemetry"))
    staged = _stage(tmp_path, policy, [r for r in ROWS if r[0]])
    run = _attempt(engine, "run-1")
    now = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    args = (engine, policy, rules, DAY, {"status": "passed"}, staged, {"status": "passed"}, run)
    decision = routing.decide(*args, now=now)
    assert decision.route == "cac_review"  # precise positions, no standard contract filed
    assert ledger.count_subjects(engine, YEAR, {"personal": {"v1"}}).of("personal").exported == 0
    added = routing.record_approved_export(engine, policy, rules, staged, run, now=now)
    assert added == {"personal": 4, "sensitive_personal": 2}
    again = routing.record_approved_export(engine, policy, rules, staged, run, now=now)
    assert again == {"personal": 0, "sensitive_personal": 0}
    no_personal = load_policy("production_quality")
    assert routing.record_approved_export(engine, no_personal, rules, staged, run) == {}
