"""Quality gate: a dataset's Great Expectations suite, run file by file, plus partition checks.

Suites live in ``expectations/<dataset>.<stage>.json`` (GX 1.x suite JSON). Each
expectation carries its GX ``severity``: ``critical`` blocks the export, ``warning`` is
recorded and alerted while the export goes on. The suite's ``meta.partition_checks``
name checks that need the whole partition (uniqueness across files, a value monotonic
per vehicle); GX runs on one file at a time, so memory is bounded by the largest file.
The day window comes in as the suite parameters ``day_start`` and ``day_end``.

A critical failure raises QualityFailed naming dataset, day, file and expectations, and
carrying the full result (with samples of personal columns masked) for the ledger.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, time, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from crossborder.errors import QualityFailed
from crossborder.extract import SHANGHAI
from crossborder.parallel import run_jobs
from crossborder.policy import REPO_ROOT, TIME_UNITS
from crossborder.spill import Spill, records, total_rows, value_hashes

SAMPLE_SIZE = 5
# GX's default (SUMMARY) also tallies the unexpected values and their row indexes, which
# nothing here reads; BASIC keeps the counts, a sample and the observed values, at half
# the cost on a million-row file.
RESULT_FORMAT = "BASIC"
# Data Docs pages load CSS and JS from public CDNs; the reports are read without them.
_EXTERNAL_ASSET = re.compile(
    r'<link[^>]+href="https?://[^"]*"[^>]*>|<script[^>]+src="https?://[^"]*"[^>]*>\s*</script>'
    r"|url\(['\"]?https?://[^)]*\)"
    r'|<img[^>]+src="https?://[^"]*"[^>]*>|href="https?://[^"]*"',
    re.IGNORECASE,
)
CRITICAL, WARNING = "critical", "warning"


@dataclass(frozen=True)
class Failure:
    expectation: str
    severity: str
    column: str | None = None
    file: str | None = None  # None: the check covers the whole partition
    unexpected_count: int | None = None
    sample: list[Any] = field(default_factory=list)
    detail: str = ""

    @property
    def where(self) -> str:
        return Path(self.file).name if self.file else "partition"

    def describe(self) -> str:
        where = f" on {self.column}" if self.column else ""
        count = f" ({self.unexpected_count} unexpected)" if self.unexpected_count else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.expectation}{where}{count}{detail}"


@dataclass(frozen=True)
class FileResult:
    file: str
    rows: int
    evaluated: int
    report: str | None  # the rendered Data Docs page, if any


@dataclass(frozen=True)
class SuiteResult:
    suite: str
    files: tuple[FileResult, ...]
    failures: tuple[Failure, ...]
    subjects: int | None = None  # distinct vehicles (or other subjects) in the partition

    @property
    def critical(self) -> list[Failure]:
        return [f for f in self.failures if f.severity != WARNING]  # unknown blocks

    @property
    def warnings(self) -> list[Failure]:
        return [f for f in self.failures if f.severity == WARNING]

    @property
    def success(self) -> bool:
        return not self.critical

    def summary(self) -> dict[str, Any]:
        """The small, JSON-able record kept in the ledger, XCom and the manifest."""
        return {
            "status": "passed" if self.success else "failed",
            "suite": self.suite,
            "files": len(self.files),
            "rows": sum(f.rows for f in self.files),
            "subjects": self.subjects,
            "critical": [asdict(f) for f in self.critical],
            "warnings": [asdict(f) for f in self.warnings],
        }


def expectations_dir() -> Path:
    return Path(os.environ.get("CROSSBORDER_EXPECTATIONS_DIR", REPO_ROOT / "expectations"))


def suite_path(dataset: str, stage: str = "raw", directory: Path | None = None) -> Path:
    return (directory or expectations_dir()) / f"{dataset}.{stage}.json"


def has_suite(dataset: str, stage: str = "raw", directory: Path | None = None) -> bool:
    return suite_path(dataset, stage, directory).is_file()


def load_suite(dataset: str, stage: str = "raw", directory: Path | None = None) -> dict[str, Any]:
    """Read a suite, refusing severities other than critical/warning (fail closed)."""
    path = suite_path(dataset, stage, directory)
    suite = json.loads(path.read_text(encoding="utf-8"))
    meta = suite.get("meta", {})
    declared = [e.get("severity", CRITICAL) for e in suite["expectations"]]
    declared += [c.get("severity", CRITICAL) for c in meta.get("partition_checks", [])]
    declared.append(meta.get("volume", {}).get("severity", WARNING))
    wrong = sorted({str(s) for s in declared} - {CRITICAL, WARNING})
    if wrong:
        raise QualityFailed(
            f"suite declares unknown severities {wrong}: only critical or warning",
            dataset=dataset,
            file=str(path),
        )
    return suite


def day_window(day: str) -> dict[str, Any]:
    """Suite parameters: the first and last millisecond of the Shanghai day, and for each
    generalize_time unit every instant of the day on that grid (``every_15min``: 00:00,
    00:15, ...), so a suite checks time precision with a cheap set lookup."""
    import pandas as pd

    start = datetime.combine(datetime.fromisoformat(day).date(), time(), SHANGHAI)
    end = start + timedelta(days=1) - timedelta(milliseconds=1)
    grids = {
        f"every_{name}": list(pd.date_range(start, end, freq=pd.Timedelta(**{f"{unit}s": n})))
        for name, (unit, n) in TIME_UNITS.items()
    }
    return {"day_start": pd.Timestamp(start), "day_end": pd.Timestamp(end), **grids}


def validate_partition(
    dataset: str,
    day: str,
    files: list[str],
    *,
    masked_columns: Iterable[str] | None = (),
    history: list[dict[str, Any]] | None = None,
    report_dir: Path | None = None,
    stage: str = "raw",
    directory: Path | None = None,
    redact_samples: bool = False,
) -> SuiteResult:
    """Validate every file and the partition as a whole; raise QualityFailed if critical.

    ``history`` holds the trailing partitions' ``{"rows", "subjects"}`` for the volume check;
    ``masked_columns`` names the personal columns whose samples are masked;
    ``redact_samples`` replaces every sample value entirely (no report shows any of it).
    """
    suite = load_suite(dataset, stage, directory)
    validation = validation_definition(suite)
    parameters = day_window(day)
    mask = _masker(None if masked_columns is None else set(masked_columns), redact_samples)

    def validate_file(file: str) -> tuple[FileResult, list[Failure]]:
        outcome, rows = run_suite(validation, file, parameters)
        _mask_samples(outcome, mask)  # before anything (report, ledger) sees the samples
        report = _render(outcome, report_dir, Path(file).stem) if report_dir else None
        evaluated = outcome.statistics["evaluated_expectations"]
        return FileResult(file, rows, evaluated, report), _failures(outcome, file, mask)

    meta = suite.get("meta", {})
    checks, volume = meta.get("partition_checks", []), meta.get("volume", {})
    # The whole-partition checks (the longest jobs) run on the workers beside the files.
    jobs: list[Callable[[], Any]] = [
        *(partial(_partition_check, files, check, mask) for check in checks),
        partial(_subjects, files, volume.get("subject_column")),
        *(partial(validate_file, file) for file in files),
    ]
    done = run_jobs(jobs)
    partition_failures, subjects = done[: len(checks)], done[len(checks)]
    results, failures = [], []
    for result, found in done[len(checks) + 1 :]:
        results.append(result)
        failures += found
    failures += [failure for found in partition_failures for failure in found]
    rows = sum(r.rows for r in results)
    failures += volume_failures(rows, subjects, history or [], volume)
    result = SuiteResult(
        suite=suite["name"], files=tuple(results), failures=tuple(failures), subjects=subjects
    )
    if report_dir:
        write_report_index(report_dir, dataset, day, result)
    if not result.success:
        raise quality_failure(dataset, day, result)
    return result


def for_manifest(summary: dict[str, Any]) -> dict[str, Any]:
    """What the U.S. side learns of the checks: verdict, counts, warnings; no sample values."""
    keep = ("expectation", "severity", "column", "unexpected_count", "detail")
    return {
        "status": summary["status"],
        "suite": summary.get("suite"),
        "files": summary.get("files"),
        "rows": summary.get("rows"),
        "warnings": [{k: w.get(k) for k in keep} for w in summary.get("warnings", [])],
    }


def quality_failure(dataset: str, day: str, result: SuiteResult) -> QualityFailed:
    """The typed error for a critical failure, carrying the result for the ledger."""
    bad = result.critical
    by_file: dict[str, list[str]] = {}
    for failure in bad:
        by_file.setdefault(failure.where, []).append(failure.describe())
    parts = [f"{name}: {', '.join(found)}" for name, found in by_file.items()]
    error = QualityFailed(
        f"quality suite {result.suite} failed: " + "; ".join(parts),
        dataset=dataset,
        day=day,
        file=next((f.file for f in bad if f.file), None),
    )
    error.result = result.summary()
    return error


# --- Great Expectations ---------------------------------------------------------------


def run_suite(validation: Any, file: str, parameters: dict[str, Any]) -> tuple[Any, int]:
    """One file through a suite: (GX's result, the file's rows)."""
    import pyarrow.parquet as pq

    # Columns handed over one by one, each freed from Arrow as it goes: a smaller peak.
    frame = pq.read_table(file).to_pandas(split_blocks=True, self_destruct=True)
    outcome = validation.run(
        batch_parameters={"dataframe": frame},
        expectation_parameters=parameters,
        result_format=RESULT_FORMAT,
    )
    return outcome, len(frame)


def validation_definition(suite_json: dict[str, Any]) -> Any:
    os.environ["GX_ANALYTICS_ENABLED"] = "false"  # never call out of the network
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )
    from great_expectations.execution_engine import pandas_execution_engine

    import crossborder.custom_expectations  # noqa: F401  (registers the grid expectation)

    # GX fingerprints every in-memory batch below this size by hashing all its rows (an
    # informational batch marker we never read): 0.75 s per million telemetry rows.
    pandas_execution_engine.HASH_THRESHOLD = 0

    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    suite = context.suites.add(gx.ExpectationSuite(**suite_json))
    if len(suite.expectations) != len(suite_json["expectations"]):
        # GX drops an expectation it cannot parse with only a log line: refuse instead.
        raise QualityFailed(
            f"suite {suite_json['name']}: {len(suite_json['expectations'])} expectations "
            f"declared, only {len(suite.expectations)} understood by Great Expectations"
        )
    batch = (
        context.data_sources.add_pandas("partition")
        .add_dataframe_asset("file")
        .add_batch_definition_whole_dataframe("whole_file")
    )
    return context.validation_definitions.add(
        gx.ValidationDefinition(name=suite_json["name"], data=batch, suite=suite)
    )


def _mask_samples(outcome: Any, mask: Callable[[str | None, Any], Any]) -> None:
    """Mask the unexpected values GX keeps, in place, so no report shows personal data."""
    for item in outcome.results:
        kwargs = item.expectation_config.kwargs
        column = kwargs.get("column") or kwargs.get("column_A")
        detail = item.result or {}
        if "partial_unexpected_list" in detail:
            detail["partial_unexpected_list"] = [
                mask(column, v) for v in detail["partial_unexpected_list"]
            ]
        for entry in detail.get("partial_unexpected_counts") or []:
            entry["value"] = mask(column, entry.get("value"))


def _failures(outcome: Any, file: str, mask: Callable[[str | None, Any], Any]) -> list[Failure]:
    found = []
    for item in outcome.results:
        if item.success:
            continue
        config = item.expectation_config
        column = config.kwargs.get("column") or config.kwargs.get("column_A")
        detail = item.result or {}
        found.append(
            Failure(
                expectation=config.type,
                severity=getattr(config.severity, "value", str(config.severity)),
                column=column,
                file=file,
                unexpected_count=detail.get("unexpected_count"),
                sample=list(detail.get("partial_unexpected_list") or [])[:SAMPLE_SIZE],
                detail=_detail(config.type, config.kwargs, detail, item.exception_info),
            )
        )
    return found


def _detail(kind: str, kwargs: dict, result: dict, exception: dict | None) -> str:
    """One plain sentence on what was found, where GX's counts alone do not say it."""
    if kind == "expect_table_columns_to_match_ordered_list":
        return schema_drift(kwargs["column_list"], result.get("observed_value") or [])
    if kind == "expect_column_values_to_be_of_type":
        return f"expected {kwargs['type_']}, found {result.get('observed_value')}"
    if kind == "expect_table_row_count_to_be_between":
        return f"{result.get('observed_value')} rows"
    for info in _exception_infos(exception):
        if info.get("raised_exception"):
            message = str(info.get("exception_message") or "").splitlines()
            return f"could not be evaluated: {message[0] if message else 'error'}"
    return ""


def _exception_infos(exception: dict | None) -> list[dict]:
    """GX gives one exception_info, or one per metric keyed by metric id."""
    if not exception:
        return []
    if "raised_exception" in exception:
        return [exception]
    return [v for v in exception.values() if isinstance(v, dict)]


def schema_drift(expected: list[str], observed: list[str]) -> str:
    """Name the drift: missing, added, renamed (one out, one in at the same place), moved."""
    missing = [c for c in expected if c not in observed]
    added = [c for c in observed if c not in expected]
    renamed = [
        f"{old} → {new}"
        for old, new in zip(missing, added, strict=False)
        if expected.index(old) == observed.index(new)
    ]
    parts = []
    if renamed:
        parts.append("renamed " + ", ".join(renamed))
        renamed_pairs = {p.split(" → ")[0] for p in renamed} | {p.split(" → ")[1] for p in renamed}
        missing = [c for c in missing if c not in renamed_pairs]
        added = [c for c in added if c not in renamed_pairs]
    if missing:
        parts.append("missing " + ", ".join(missing))
    if added:
        parts.append("unexpected " + ", ".join(added))
    return "; ".join(parts) or "columns are out of order"


def _render(outcome: Any, report_dir: Path, name: str) -> str:
    """Render one file's validation result as a Great Expectations Data Docs page."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    page = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(outcome))
    page = _EXTERNAL_ASSET.sub("", page)  # the page must not make browsers call out of China
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / f"{name}.html").write_text(page, encoding="utf-8")
    return f"{name}.html"


def _row(*cells: Any) -> str:
    text = (c if isinstance(c, str) else json.dumps(c, ensure_ascii=False) for c in cells)
    return "<tr>" + "".join(f"<td>{html.escape(t)}</td>" for t in text) + "</tr>"


def write_report_index(report_dir: Path, dataset: str, day: str, result: SuiteResult) -> Path:
    """index.html: the verdict, every failure, and a link to each file's Data Docs page."""
    rows = "".join(_row(f.severity, f.where, f.describe(), f.sample) for f in result.failures)
    links = "".join(
        f'<li><a href="{html.escape(r.report)}">{html.escape(Path(r.file).name)}</a>'
        f" ({r.rows:,} rows, {r.evaluated} expectations)</li>"
        for r in result.files
        if r.report
    )
    verdict = "PASSED" if result.success else "FAILED: nothing of this partition leaves China"
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(result.suite)} {html.escape(day)}</title></head><body>
<h1>Quality report: {html.escape(dataset)} {html.escape(day)}</h1>
<p>Suite <code>{html.escape(result.suite)}</code>: <strong>{verdict}</strong></p>
<h2>Failures</h2>
<table border="1"><tr><th>severity</th><th>where</th><th>expectation</th><th>sample</th></tr>
{rows or '<tr><td colspan="4">none</td></tr>'}</table>
<h2>Data Docs per file</h2><ul>{links}</ul></body></html>
"""
    path = report_dir / "index.html"
    report_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


# --- partition checks (whole partition, column-wise reads) --------------------------------


HASHES = [("hash", "<u8")]  # spilled records of the partition checks
ORDERED_VALUES = [("group", "<u8"), ("when", "<i8"), ("value", "<f8")]


def _id_hashes(values: Any) -> Any:
    return value_hashes(values, distinct_first=False)  # ids are (nearly) all distinct


def _file_columns(files: list[str], columns: list[str]) -> Iterator[Any]:
    """One file's columns at a time, rows with a null key dropped: memory stays per file."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for file in files:
        table = pq.read_table(file, columns=columns)
        key = table.column(columns[0])
        yield table.filter(pc.is_valid(key)) if key.null_count else table


def _partition_check(
    files: list[str], check: dict[str, Any], mask: Callable[[str | None, Any], Any]
) -> list[Failure]:
    """Run one partition check; one that cannot run (e.g. a column is gone) fails."""
    import pyarrow as pa

    try:
        return PARTITION_CHECKS[check["check"]](files, check, mask)
    except (pa.ArrowException, KeyError, ValueError) as exc:
        detail = f"could not be evaluated: {str(exc).splitlines()[0]}"
        name = f"partition_{check['check']}"
        return [
            Failure(
                name, check.get("severity", CRITICAL), column=check.get("column"), detail=detail
            )
        ]


def _subjects(files: list[str], column: str | None) -> int | None:
    """Distinct subjects for the volume check; unknown if the column is gone (a schema
    failure already blocks such a partition)."""
    import pyarrow as pa

    if not column:
        return None
    try:
        return count_distinct(files, column)
    except (pa.ArrowException, KeyError):
        return None


def count_distinct(files: list[str], column: str) -> int:
    """Distinct non-null values over the files (each file's distinct values, combined)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    per_file = [pc.unique(t.column(column)) for t in _file_columns(files, [column])]
    if not per_file:
        return 0
    return len(pc.unique(pa.chunked_array(per_file)))


def unique_across_files(
    files: list[str], check: dict[str, Any], mask: Callable[[str | None, Any], Any]
) -> list[Failure]:
    """Values repeated anywhere in the partition: 64-bit hashes first, spilled by hash
    (flat memory), then the exact values of the few suspects."""
    import numpy as np

    column = check["column"]
    suspects = []
    with Spill(total_rows(files), HASHES, "hash") as spill:
        for table in _file_columns(files, [column]):
            spill.add(records(HASHES, hash=_id_hashes(table.column(column))))
        for bucket in spill.buckets():
            hashes = np.sort(bucket["hash"])
            suspects.append(np.unique(hashes[1:][hashes[1:] == hashes[:-1]]))
    suspects = np.concatenate(suspects) if suspects else np.empty(0, np.uint64)
    if suspects.size == 0:
        return []
    counts: Counter[Any] = Counter()
    for table in _file_columns(files, [column]):
        values = table.column(column)
        counts.update(values.filter(np.isin(_id_hashes(values), suspects)).to_pylist())
    repeated = {value: n for value, n in counts.items() if n > 1}
    if not repeated:
        return []  # only hash collisions
    return [
        Failure(
            "partition_values_unique_across_files",
            check.get("severity", CRITICAL),
            column=column,
            unexpected_count=sum(repeated.values()),
            sample=[mask(column, v) for v in list(repeated)[:SAMPLE_SIZE]],
            detail=f"{len(repeated)} values occur more than once in the partition",
        )
    ]


def monotonic_per_group(
    files: list[str], check: dict[str, Any], mask: Callable[[str | None, Any], Any]
) -> list[Failure]:
    """A value that must not decrease within a group (a vehicle's odometer) over time.

    Rows are spilled by the group's hash, so each bucket holds whole groups."""
    import numpy as np

    column, group, order = check["column"], check["group_by"], check["order_by"]
    drops, bad = 0, []
    with Spill(total_rows(files), ORDERED_VALUES, "group") as spill:
        for table in _file_columns(files, [group, order, column]):
            spill.add(
                records(
                    ORDERED_VALUES,
                    group=value_hashes(table.column(group)),
                    when=table.column(order).cast("int64").to_numpy(),
                    value=table.column(column).cast("float64").to_numpy(),
                )
            )
        for bucket in spill.buckets():
            order = by_group_then_time(bucket["group"], bucket["when"])
            groups, values = bucket["group"][order], bucket["value"][order]  # not whole records
            dropped = (groups[1:] == groups[:-1]) & (np.diff(values) < 0)
            drops += int(dropped.sum())
            bad.append(np.unique(groups[1:][dropped]))
    bad_groups = np.concatenate(bad) if bad else np.empty(0, np.uint64)
    if not drops:
        return []
    return [
        Failure(
            "partition_values_monotonic_per_group",
            check.get("severity", WARNING),
            column=column,
            unexpected_count=drops,
            sample=[mask(group, v) for v in _values_of(files, group, bad_groups)],
            detail=f"{column} decreases within {len(bad_groups)} {group} value(s) over {order}",
        )
    ]


def by_group_then_time(groups: Any, when: Any) -> Any:
    """Row order with each group's rows together, by time (ties in row order). One int64
    key, group code × time span + time, sorts 4× faster than ``np.lexsort`` of the pair;
    lexsort is kept for spans so wide that the key would overflow."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(when) == 0:
        return np.empty(0, np.intp)
    codes = pc.dictionary_encode(pa.array(groups)).indices.to_numpy().astype(np.int64)
    start, span = int(when.min()), int(when.max()) - int(when.min()) + 1
    if (int(codes.max()) + 1) * span >= 2**63:
        return np.lexsort((when, groups))
    return np.argsort(codes * span + (when - start), kind="stable")


def _values_of(files: list[str], column: str, hashes: Any) -> list[Any]:
    """Up to SAMPLE_SIZE values of ``column`` whose hash is among ``hashes``, in file order."""
    import numpy as np

    found: dict[Any, None] = {}
    for table in _file_columns(files, [column]):
        values = table.column(column)
        found.update(
            dict.fromkeys(values.filter(np.isin(value_hashes(values), hashes)).to_pylist())
        )
        if len(found) >= SAMPLE_SIZE:
            break
    return list(found)[:SAMPLE_SIZE]


def volume_failures(
    rows: int, subjects: int | None, history: list[dict[str, Any]], config: dict[str, Any]
) -> list[Failure]:
    """Today's rows and distinct subjects against the median of the trailing partitions."""
    import statistics

    trailing = history[: config.get("trailing_partitions", 7)]
    if len(trailing) < config.get("min_history", 3):
        return []  # too little history to judge; the first days of a dataset always pass
    tolerance = config.get("tolerance", 0.5)
    found = []
    for measure, today in (("rows", rows), ("subjects", subjects)):
        past = [h[measure] for h in trailing if h.get(measure) is not None]
        if today is None or not past:
            continue
        typical = statistics.median(past)
        change = (today - typical) / typical if typical else 0.0
        if abs(change) > tolerance:
            found.append(
                Failure(
                    "partition_volume_within_trailing_range",
                    config.get("severity", WARNING),
                    column=measure,
                    detail=f"{measure} {today:,} is {change:+.0%} against the median "
                    f"{typical:,.0f} of the last {len(past)} partitions "
                    f"(tolerance ±{tolerance:.0%})",
                )
            )
    return found


PARTITION_CHECKS: dict[str, Callable[..., list[Failure]]] = {
    "unique_across_files": unique_across_files,
    "monotonic_per_group": monotonic_per_group,
}


def _masker(personal: set[str] | None, redact: bool = False) -> Callable[[str | None, Any], Any]:
    """Samples of personal columns keep only their shape: first and last character.

    ``None`` masks every column (used when the policy cannot say which are personal);
    ``redact`` replaces every value with ``[redacted]``.
    """

    def mask(column: str | None, value: Any) -> Any:
        plain = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if redact and plain is not None:
            return "[redacted]"
        if (personal is not None and column not in personal) or plain is None:
            return plain
        text = str(plain)
        return text[0] + "*" * max(len(text) - 2, 0) + text[-1] if len(text) > 2 else "**"

    return mask
