"""The Shanghai source store: Hive-style partitions, complete once ``_SUCCESS`` exists.

``{source}/{dataset}/dt=YYYY-MM-DD/part-NNNNN.parquet``; extraction records each file's
size, SHA-256 and row count so later steps (and the ledger) can prove what they read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from crossborder.digest import sha256_file
from crossborder.errors import PartitionInvalid
from crossborder.manifest import PART_NAME

SHANGHAI = ZoneInfo("Asia/Shanghai")
SUCCESS_MARKER = "_SUCCESS"


@dataclass(frozen=True)
class SourceFile:
    name: str
    path: str
    size: int
    sha256: str
    rows: int
    mtime_ns: int

    def is_unchanged(self) -> bool:
        """Still the file that was hashed? (size and mtime: cheap, no second read)."""
        stat = Path(self.path).stat()
        return (stat.st_size, stat.st_mtime_ns) == (self.size, self.mtime_ns)


@dataclass(frozen=True)
class Extract:
    dataset: str
    day: str
    path: str
    files: tuple[SourceFile, ...]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": self.rows, "bytes": self.bytes}

    def check_unchanged(self) -> None:
        """Refuse to go on if a source file changed since it was extracted."""
        for file in self.files:
            if not file.is_unchanged():
                raise PartitionInvalid(
                    "file changed since it was extracted: re-run from extract",
                    dataset=self.dataset,
                    day=self.day,
                    file=file.path,
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Extract:
        files = tuple(SourceFile(**f) for f in data["files"])
        return cls(dataset=data["dataset"], day=data["day"], path=data["path"], files=files)


def partition_day(logical_date: datetime) -> date:
    """The Shanghai day a run exports: the day before the run's logical date, in Shanghai.

    Derived explicitly, because a bare cron schedule gives zero-width data intervals.
    """
    return logical_date.astimezone(SHANGHAI).date() - timedelta(days=1)


def partition_path(source_root: Path | str, dataset: str, day: date | str) -> Path:
    return Path(source_root) / dataset / f"dt={day}"


def is_ready(source_root: Path, dataset: str, day: str) -> bool:
    return (partition_path(source_root, dataset, day) / SUCCESS_MARKER).is_file()


def extract_partition(source_root: Path, dataset: str, day: str) -> Extract:
    """List a complete partition's files with size, SHA-256 and row count."""
    return extract_folder(partition_path(source_root, dataset, day), dataset, day)


def part_names(
    listed: list[str], where: str, locate: Callable[[str], str], dataset: str, day: str
) -> list[str]:
    """The part files of a complete partition, in order, from the names found ``where``
    (a folder or an object-store prefix); ``locate`` names one of them in an error."""
    if SUCCESS_MARKER not in listed:
        raise PartitionInvalid(f"no {SUCCESS_MARKER} marker in {where}", dataset=dataset, day=day)
    names = sorted(n for n in listed if n and not n.startswith(("_", ".")))
    strangers = [n for n in names if not PART_NAME.match(n)]
    if strangers:
        raise PartitionInvalid(
            f"unexpected files in the partition: {', '.join(strangers)}",
            dataset=dataset,
            day=day,
            file=locate(strangers[0]),
        )
    if not names:
        raise PartitionInvalid(f"no part files in {where}", dataset=dataset, day=day)
    return names


def extract_folder(folder: Path, dataset: str, day: str) -> Extract:
    """``extract_partition`` for a partition folder given directly (e.g. a local mirror of
    an object-store partition, see ``crossborder.source``)."""
    import pyarrow.parquet as pq

    names = part_names(
        [p.name for p in folder.iterdir()], str(folder), lambda n: str(folder / n), dataset, day
    )
    files = []
    for name in names:
        path = folder / name
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # any pyarrow read error means an unusable file
            raise PartitionInvalid(
                f"not a readable Parquet file ({exc})", dataset=dataset, day=day, file=str(path)
            ) from exc
        mtime_ns = path.stat().st_mtime_ns
        sha256, size = sha256_file(path)
        files.append(SourceFile(name, str(path), size, sha256, rows, mtime_ns))
    return Extract(dataset=dataset, day=day, path=str(folder), files=tuple(files))
