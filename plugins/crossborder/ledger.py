"""The export ledger: the exporter's own audit record, never Airflow's metadata database.

One row per (dataset, partition day, attempt); an attempt is one DAG run, so re-running
a task inside the same run updates the same row. Events are append-only. Written through
SQLAlchemy Core so SQLite (default) and PostgreSQL (production) both work.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

# States an attempt moves through; all but in_progress are final for that attempt.
STATES = ("in_progress", "exported", "awaiting_review", "rejected", "blocked", "failed", "received")

metadata = sa.MetaData()

attempts = sa.Table(
    "export_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dataset", sa.String(100), nullable=False),
    sa.Column("partition_date", sa.String(10), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("dag_run_id", sa.String(250), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("route", sa.String(20)),
    sa.Column("reasons", sa.JSON, nullable=False, default=list),
    sa.Column("policy_version", sa.String(80)),
    sa.Column("rows_in", sa.BigInteger),
    sa.Column("rows_out", sa.BigInteger),
    sa.Column("objects", sa.Integer),
    sa.Column("bytes_out", sa.BigInteger),
    sa.Column("quality", sa.JSON),
    sa.Column("anonymization", sa.JSON),  # transforms applied and verification results
    sa.Column("manifest_uri", sa.String(1000)),
    sa.Column("manifest_sha256", sa.String(64)),
    sa.Column("approvals", sa.JSON, nullable=False, default=list),
    sa.Column("receipt", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("dataset", "partition_date", "dag_run_id", name="uq_attempt_run"),
    sa.UniqueConstraint("dataset", "partition_date", "attempt", name="uq_attempt_number"),
)

events = sa.Table(
    "ledger_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("attempt_id", sa.Integer, sa.ForeignKey("export_attempts.id")),
    sa.Column("dataset", sa.String(100), nullable=False),
    sa.Column("partition_date", sa.String(10), nullable=False),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

_INSERT_TRIES = 20
FINAL_FIELDS = frozenset(c.name for c in attempts.columns) - {"id", "dataset", "partition_date"}


def _now() -> datetime:
    return datetime.now(UTC)


def _sqlite_busy_timeout(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA busy_timeout=30000")


@cache
def connect(url: str) -> sa.Engine:
    """An engine for the ledger at ``url``, with its tables created if missing."""
    engine = sa.create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        # Several tasks may write at once: wait for the lock rather than fail.
        sa.event.listen(engine, "connect", _sqlite_busy_timeout)
    metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine


def _add_missing_columns(engine: sa.Engine) -> None:
    """Columns added to the ledger later are added to an existing ledger (all nullable).

    Workers starting together may race to add the same column: the loser finds it there.
    """
    for table in metadata.sorted_tables:
        for column in table.columns:
            if column.name in _column_names(engine, table.name):
                continue
            kind = column.type.compile(dialect=engine.dialect)
            try:
                with _tx(engine) as conn:
                    conn.execute(
                        sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                    )
            except sa.exc.DBAPIError:
                if column.name not in _column_names(engine, table.name):
                    raise


def _column_names(engine: sa.Engine, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns(table)}


@contextmanager
def _tx(engine: sa.Engine) -> Iterator[sa.Connection]:
    with engine.begin() as conn:
        yield conn


def begin_attempt(engine: sa.Engine, dataset: str, day: str, dag_run_id: str) -> int:
    """The attempt row for this run, created on first call (idempotent per run).

    Two writers racing for the same run or the same attempt number hit a unique
    constraint; the loser simply looks again.
    """
    for _ in range(_INSERT_TRIES):
        try:
            return _find_or_insert_attempt(engine, dataset, day, dag_run_id)
        except sa.exc.IntegrityError:
            time.sleep(random.uniform(0, 0.05))  # let the winner commit, then look again
    raise RuntimeError(f"ledger: could not record an attempt for {dataset} {day} {dag_run_id}")


def _find_or_insert_attempt(engine: sa.Engine, dataset: str, day: str, dag_run_id: str) -> int:
    with _tx(engine) as conn:
        found = conn.execute(
            sa.select(attempts.c.id).where(
                attempts.c.dataset == dataset,
                attempts.c.partition_date == day,
                attempts.c.dag_run_id == dag_run_id,
            )
        ).scalar()
        if found is not None:
            return found
        number = conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(attempts.c.attempt), 0) + 1).where(
                attempts.c.dataset == dataset, attempts.c.partition_date == day
            )
        ).scalar_one()
        now = _now()
        return conn.execute(
            attempts.insert().values(
                dataset=dataset,
                partition_date=day,
                attempt=number,
                dag_run_id=dag_run_id,
                state="in_progress",
                reasons=[],
                approvals=[],
                started_at=now,
                updated_at=now,
            )
        ).inserted_primary_key[0]


def update_attempt(engine: sa.Engine, attempt_id: int, **fields: Any) -> None:
    unknown = set(fields) - FINAL_FIELDS
    if unknown:
        raise ValueError(f"unknown ledger fields: {sorted(unknown)}")
    if "state" in fields and fields["state"] not in STATES:
        raise ValueError(f"unknown ledger state {fields['state']!r}")
    now = _now()
    if fields.get("state", "in_progress") != "in_progress":
        fields.setdefault("finished_at", now)
    with _tx(engine) as conn:
        conn.execute(
            attempts.update().where(attempts.c.id == attempt_id).values(updated_at=now, **fields)
        )


def record_event(
    engine: sa.Engine,
    dataset: str,
    day: str,
    kind: str,
    detail: dict[str, Any],
    attempt_id: int | None = None,
) -> None:
    with _tx(engine) as conn:
        conn.execute(
            events.insert().values(
                attempt_id=attempt_id,
                dataset=dataset,
                partition_date=day,
                kind=kind,
                detail=json.loads(json.dumps(detail, default=str)),
                at=_now(),
            )
        )


def get_attempt(engine: sa.Engine, attempt_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(attempts).where(attempts.c.id == attempt_id)).mappings().one()
    return dict(row)


def latest_attempt(engine: sa.Engine, dataset: str, day: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = (
            conn.execute(
                sa.select(attempts)
                .where(attempts.c.dataset == dataset, attempts.c.partition_date == day)
                .order_by(attempts.c.attempt.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None


def earlier_exports(engine: sa.Engine, dataset: str, day: str, attempt_id: int) -> list[dict]:
    """Attempts of the day before ``attempt_id`` that published a manifest, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(attempts)
            .where(
                attempts.c.dataset == dataset,
                attempts.c.partition_date == day,
                attempts.c.id < attempt_id,
                attempts.c.manifest_sha256.is_not(None),
            )
            .order_by(attempts.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def trailing_quality(
    engine: sa.Engine, dataset: str, day: str, limit: int = 30
) -> list[dict[str, Any]]:
    """Quality summaries of the latest passed attempt of each earlier day, newest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(attempts.c.partition_date, attempts.c.quality)
            .where(
                attempts.c.dataset == dataset,
                attempts.c.partition_date < day,
                attempts.c.quality.is_not(None),
            )
            .order_by(attempts.c.partition_date.desc(), attempts.c.attempt.desc())
        ).all()
    latest: dict[str, dict[str, Any]] = {}
    for partition_date, quality in rows:
        if partition_date not in latest and (quality or {}).get("status") == "passed":
            latest[partition_date] = quality
    return list(latest.values())[:limit]


def list_events(engine: sa.Engine, dataset: str, day: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(events)
            .where(events.c.dataset == dataset, events.c.partition_date == day)
            .order_by(events.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def exported_awaiting_receipt(engine: sa.Engine) -> list[dict[str, Any]]:
    """Latest attempts whose manifest was published but whose receipt is not reconciled.

    An older attempt superseded by a newer one for the same day is left alone: its
    manifest was replaced, so no receipt will ever match it.
    """
    newer = attempts.alias("newer")
    superseded = sa.exists().where(
        newer.c.dataset == attempts.c.dataset,
        newer.c.partition_date == attempts.c.partition_date,
        newer.c.attempt > attempts.c.attempt,
    )
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(attempts).where(
                attempts.c.state == "exported",
                attempts.c.manifest_sha256.is_not(None),
                ~superseded,
            )
        ).mappings()
        return [dict(r) for r in rows]


def attempts_in_state(engine: sa.Engine, state: str) -> list[dict[str, Any]]:
    """Every attempt now in ``state`` (e.g. the partitions awaiting review)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(attempts).where(attempts.c.state == state)).mappings()
        return [dict(r) for r in rows]


# --- yearly distinct subjects ----------------------------------------------------------
#
# The yearly thresholds count distinct individuals whose data left, per calendar year in
# Shanghai time and per class (personal / sensitive_personal), across days and datasets.
# One row per (year, class, subject); the attempt that first recorded it is kept so that
# re-running the same attempt sees the same figures and adds nothing.

exported_subjects = sa.Table(
    "exported_subjects",
    metadata,
    sa.Column("year", sa.Integer, primary_key=True),
    sa.Column("subject_class", sa.String(30), primary_key=True),
    sa.Column("subject", sa.String(200), primary_key=True),
    sa.Column("attempt_id", sa.Integer, sa.ForeignKey("export_attempts.id"), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_exported_subjects_attempt", "attempt_id"),
)

# Ids per query. SQLite binds at most 32,766 parameters; psycopg2 inlines them, and
# PostgreSQL looks up a large list several times faster per id than many small ones.
SUBJECT_CHUNK = {"sqlite": 5_000, "postgresql": 50_000}
_PG_LOCK_NAMESPACE = 0x5EC7  # first key of pg_advisory_xact_lock(namespace, year)


@dataclass(frozen=True)
class SubjectCount:
    """One class's yearly figures, as seen by one attempt (its own rows do not count as
    already exported, so a re-run of the attempt sees the same figures)."""

    exported: int  # distinct subjects already recorded for the year by other attempts
    recorded: int  # of the partition's subjects, how many are among them
    new: int  # of the partition's subjects, how many are not

    @property
    def if_exported(self) -> int:
        return self.exported + self.new


@dataclass(frozen=True)
class YearTotals:
    year: int
    by_class: dict[str, SubjectCount]

    def of(self, subject_class: str) -> SubjectCount:
        return self.by_class.get(subject_class, SubjectCount(0, 0, 0))


@dataclass(frozen=True)
class _Lookup:
    count: SubjectCount
    missing: list[str]  # not recorded by anyone yet: what a reservation inserts


class Routed(Protocol):
    route: str


R = TypeVar("R", bound=Routed)


@contextmanager
def year_locked(engine: sa.Engine, year: int) -> Iterator[sa.Connection]:
    """A transaction that holds the year's counting lock until it ends.

    PostgreSQL: a transaction-scoped advisory lock keyed by the year; at the default
    READ COMMITTED level each later statement sees what the previous holder committed.
    SQLite: BEGIN IMMEDIATE takes the database's write lock (a waiting writer waits up
    to busy_timeout).
    """
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:namespace, :year)"),
                {"namespace": _PG_LOCK_NAMESPACE, "year": year},
            )
            yield conn
    elif engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
    else:  # no lock we know how to take: counting would not be race-safe
        raise NotImplementedError(f"yearly subject counting on {engine.dialect.name}")


def _lookup(
    conn: sa.Connection,
    year: int,
    subject_class: str,
    subjects: Collection[str],
    attempt_id: int | None,
) -> _Lookup:
    """Which of ``subjects`` are recorded for the year and class, in chunks of ids."""
    table = exported_subjects
    of_class = sa.and_(table.c.year == year, table.c.subject_class == subject_class)
    others = sa.true() if attempt_id is None else table.c.attempt_id != attempt_id
    exported = conn.execute(
        sa.select(sa.func.count()).select_from(table).where(of_class, others)
    ).scalar_one()
    ids, chunk = sorted(set(subjects)), SUBJECT_CHUNK[conn.dialect.name]
    by_others, by_anyone = 0, set()
    for start in range(0, len(ids), chunk):
        rows = conn.execute(
            sa.select(table.c.subject, table.c.attempt_id).where(
                of_class, table.c.subject.in_(ids[start : start + chunk])
            )
        ).all()
        by_anyone.update(subject for subject, _ in rows)
        by_others += sum(1 for _, recorded_by in rows if recorded_by != attempt_id)
    missing = [s for s in ids if s not in by_anyone]
    return _Lookup(SubjectCount(exported, by_others, len(ids) - by_others), missing)


def _insert_subjects(
    conn: sa.Connection, year: int, subject_class: str, subjects: list[str], attempt_id: int
) -> None:
    now, chunk = _now(), SUBJECT_CHUNK[conn.dialect.name]
    for start in range(0, len(subjects), chunk):
        conn.execute(
            exported_subjects.insert(),
            [
                {
                    "year": year,
                    "subject_class": subject_class,
                    "subject": subject,
                    "attempt_id": attempt_id,
                    "recorded_at": now,
                }
                for subject in subjects[start : start + chunk]
            ],
        )


def count_subjects(
    engine: sa.Engine,
    year: int,
    subjects: Mapping[str, Collection[str]],
    attempt_id: int | None = None,
) -> YearTotals:
    """For each class, how many of ``subjects`` are already recorded this year, how many
    are new, and the year's total so far (rows of ``attempt_id`` itself excluded)."""
    with engine.connect() as conn:
        return YearTotals(
            year,
            {cls: _lookup(conn, year, cls, ids, attempt_id).count for cls, ids in subjects.items()},
        )


def classify_and_reserve(
    engine: sa.Engine,
    year: int,
    subjects: Mapping[str, Collection[str]],
    attempt_id: int,
    decide: Callable[[YearTotals], R],
) -> R:
    """Count, decide and reserve in one transaction under the year's lock.

    ``decide`` sees the year's totals as if the partition's subjects were added. If it
    routes ``cleared`` (the data leaves now), the new subjects are recorded before the
    lock is released, so two partitions decided at once cannot both slip under a
    threshold. Other routes record nothing: a reviewed partition is recorded when it is
    finally exported (``record_subjects``). Re-running the same attempt adds nothing.
    """
    with year_locked(engine, year) as conn:
        found = {cls: _lookup(conn, year, cls, ids, attempt_id) for cls, ids in subjects.items()}
        decision = decide(YearTotals(year, {cls: f.count for cls, f in found.items()}))
        if decision.route == "cleared":
            for cls, lookup in found.items():
                _insert_subjects(conn, year, cls, lookup.missing, attempt_id)
        return decision


def record_subjects(
    engine: sa.Engine, year: int, subjects: Mapping[str, Collection[str]], attempt_id: int
) -> dict[str, int]:
    """Record the subjects of a partition that leaves after approval (idempotent).

    Returns how many were new per class; subjects already recorded are left as they are.
    """
    with year_locked(engine, year) as conn:
        added = {}
        for cls, ids in subjects.items():
            missing = _lookup(conn, year, cls, ids, attempt_id).missing
            _insert_subjects(conn, year, cls, missing, attempt_id)
            added[cls] = len(missing)
        return added


def find_attempt(engine: sa.Engine, dataset: str, day: str, dag_run_id: str) -> int | None:
    """The attempt of a run, if it has one (never creates it)."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(attempts.c.id).where(
                attempts.c.dataset == dataset,
                attempts.c.partition_date == day,
                attempts.c.dag_run_id == dag_run_id,
            )
        ).scalar()
