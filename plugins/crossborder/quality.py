"""Quality gate: a dataset's Great Expectations suite, run file by file.

Suites live in ``expectations/<dataset>.<stage>.json`` (GX 1.x suite JSON). Each file of
the partition is validated on its own, so memory is bounded by the largest file. A
failing suite raises QualityFailed naming dataset, day, file and expectations: nothing
downstream (and so nothing abroad) runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crossborder.errors import QualityFailed
from crossborder.policy import REPO_ROOT

SAMPLE_SIZE = 5


@dataclass(frozen=True)
class Failure:
    expectation: str
    column: str | None
    unexpected_count: int | None
    sample: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        where = f" on {self.column}" if self.column else ""
        count = f" ({self.unexpected_count} unexpected)" if self.unexpected_count else ""
        return f"{self.expectation}{where}{count}"


@dataclass(frozen=True)
class FileResult:
    file: str
    rows: int
    evaluated: int
    failures: tuple[Failure, ...]


@dataclass(frozen=True)
class SuiteResult:
    suite: str
    success: bool
    files: tuple[FileResult, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expectations_dir() -> Path:
    return Path(os.environ.get("CROSSBORDER_EXPECTATIONS_DIR", REPO_ROOT / "expectations"))


def suite_path(dataset: str, stage: str = "raw", directory: Path | None = None) -> Path:
    return (directory or expectations_dir()) / f"{dataset}.{stage}.json"


def has_suite(dataset: str, stage: str = "raw", directory: Path | None = None) -> bool:
    return suite_path(dataset, stage, directory).is_file()


def validate_files(
    dataset: str,
    day: str,
    files: list[str],
    stage: str = "raw",
    directory: Path | None = None,
) -> SuiteResult:
    """Validate each Parquet file with the suite; raise QualityFailed if any fails."""
    import pyarrow.parquet as pq

    path = suite_path(dataset, stage, directory)
    suite_json = json.loads(path.read_text(encoding="utf-8"))
    validation = _validation_definition(suite_json)
    results = []
    for file in files:
        frame = pq.read_table(file).to_pandas()
        outcome = validation.run(batch_parameters={"dataframe": frame})
        results.append(_file_result(file, len(frame), outcome))
        del frame
    result = SuiteResult(
        suite=suite_json["name"],
        success=all(not r.failures for r in results),
        files=tuple(results),
    )
    if not result.success:
        raise QualityFailed(
            _failure_message(result), dataset=dataset, day=day, file=_first_bad(result)
        )
    return result


def _validation_definition(suite_json: dict[str, Any]) -> Any:
    os.environ["GX_ANALYTICS_ENABLED"] = "false"  # never call out of the network
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    suite = context.suites.add(gx.ExpectationSuite(**suite_json))
    batch = (
        context.data_sources.add_pandas("partition")
        .add_dataframe_asset("file")
        .add_batch_definition_whole_dataframe("whole_file")
    )
    return context.validation_definitions.add(
        gx.ValidationDefinition(name=suite_json["name"], data=batch, suite=suite)
    )


def _file_result(file: str, rows: int, outcome: Any) -> FileResult:
    failures = []
    for item in outcome.results:
        if item.success:
            continue
        config = item.expectation_config
        detail = item.result or {}
        failures.append(
            Failure(
                expectation=config.type,
                column=config.kwargs.get("column"),
                unexpected_count=detail.get("unexpected_count"),
                sample=[_plain(v) for v in (detail.get("partial_unexpected_list") or [])][
                    :SAMPLE_SIZE
                ],
            )
        )
    evaluated = outcome.statistics["evaluated_expectations"]
    return FileResult(file=file, rows=rows, evaluated=evaluated, failures=tuple(failures))


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def _first_bad(result: SuiteResult) -> str | None:
    return next((r.file for r in result.files if r.failures), None)


def _failure_message(result: SuiteResult) -> str:
    parts = [
        f"{Path(r.file).name}: " + ", ".join(f.describe() for f in r.failures)
        for r in result.files
        if r.failures
    ]
    return f"quality suite {result.suite} failed: " + "; ".join(parts)
