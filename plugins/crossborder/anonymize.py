"""Apply a dataset's policy to each source file and stage the result in China.

Only the columns the policy allows are written (allow-list); each column goes through
its transform. Files are processed row group by row group, so memory stays flat however
large the partition is. Staged files are the exact plaintext that will be encrypted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crossborder.digest import sha256_file
from crossborder.errors import PartitionInvalid, PolicyInvalid
from crossborder.extract import Extract, partition_path
from crossborder.policy import Policy


@dataclass(frozen=True)
class StagedFile:
    name: str
    path: str
    rows: int
    size: int
    sha256: str


@dataclass(frozen=True)
class Staged:
    dataset: str
    day: str
    policy_version: str
    columns: tuple[str, ...]
    files: tuple[StagedFile, ...]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": self.rows}


def staging_path(staging_root: Path, dataset: str, day: str) -> Path:
    return partition_path(staging_root, dataset, day)  # same layout as the source


def _keep(column: Any) -> Any:
    return column


# Transforms the pipeline can run ("drop" is simply not written); the policy module
# refuses an active policy naming any other.
TRANSFORMS: dict[str, Callable[[Any], Any]] = {"keep": _keep}


def anonymize_partition(policy: Policy, extract: Extract, staging_root: Path) -> Staged:
    """Write the policy's view of every source file to the CN staging folder."""
    out_dir = staging_path(staging_root, extract.dataset, extract.day)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {f.name for f in extract.files}
    for stale in out_dir.glob("part-*.parquet"):
        if stale.name not in wanted:
            stale.unlink()
    extract.check_unchanged()
    staged = tuple(
        _stage_file(policy, extract, Path(f.path), out_dir / f.name) for f in extract.files
    )
    return Staged(
        dataset=extract.dataset,
        day=extract.day,
        policy_version=policy.version,
        columns=tuple(policy.exported_columns),
        files=staged,
    )


def _stage_file(policy: Policy, extract: Extract, src: Path, dst: Path) -> StagedFile:
    import pyarrow.parquet as pq

    where = {"dataset": extract.dataset, "day": extract.day, "file": str(src)}
    source = pq.ParquetFile(src)
    missing = [c for c in policy.exported_columns if c not in source.schema_arrow.names]
    if missing:
        raise PartitionInvalid(f"columns named by the policy are missing: {missing}", **where)
    tmp = dst.with_name(f".{dst.name}.tmp")
    writer = None
    rows = 0
    try:
        for group in range(source.num_row_groups):
            table = _apply(policy, source.read_row_group(group, columns=policy.exported_columns))
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table)
            rows += table.num_rows
        if writer is None:  # a file without row groups still yields a valid empty file
            empty = source.schema_arrow.empty_table().select(policy.exported_columns)
            pq.write_table(_apply(policy, empty), tmp, compression="zstd")
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(dst)
    sha256, size = sha256_file(dst)
    return StagedFile(dst.name, str(dst), rows, size, sha256)


def _apply(policy: Policy, table: Any) -> Any:
    import pyarrow as pa

    arrays = []
    for rule in policy.columns:
        if rule.transform == "drop":
            continue
        transform = TRANSFORMS.get(rule.transform)
        if transform is None:
            raise PolicyInvalid(
                f"column {rule.name}: transform {rule.transform!r} is not available",
                dataset=policy.dataset,
                file=str(policy.path),
            )
        arrays.append(transform(table.column(rule.name)))
    return pa.table(arrays, names=policy.exported_columns)
