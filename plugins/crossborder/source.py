"""The Shanghai source store behind connection ``cn_source``: a folder, or an S3-compatible
object store (in production; MinIO stands in for it in the compose deployment).

A source answers two questions: is a day's partition complete (its ``_SUCCESS`` exists),
and where is it as a local folder in the Hive layout. Extraction and every later step
read local files only, so an object-store partition is first mirrored into a China-side
folder, ``{staging_root}/_source/{dataset}/dt=YYYY-MM-DD/``, and ``extract_folder`` then
runs on the mirror exactly as on a folder source.

Mirroring is idempotent and crash-safe: each part object is streamed to a hidden
temporary file (boto3 ``download_file``, ranged GETs, never a whole file in memory),
checked against the listed size and ETag, renamed into place, and only then recorded in
a hidden sidecar ``.part-NNNNN.parquet.source.json`` (object key, ETag, size, the local
copy's mtime). A part whose sidecar matches the object and the local copy is not
downloaded again; the mirror's ``_SUCCESS`` is written last. A complete Shanghai
partition must not change: an object that changed, appeared or disappeared after it was
mirrored is refused (PartitionInvalid naming dataset, day and object), never silently
replaced. Hidden and ``_`` names are skipped by extraction, as in a folder source.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossborder.errors import PartitionInvalid
from crossborder.extract import (
    SUCCESS_MARKER,
    Extract,
    extract_folder,
    is_ready,
    part_names,
    partition_path,
)
from crossborder.manifest import PART_NAME

if TYPE_CHECKING:
    from crossborder.settings import Settings

MIRROR_FOLDER = "_source"  # under staging_root, next to _quality_reports
SIDECAR_SUFFIX = ".source.json"
TEMP_MARK = ".download-"
STALE_TEMP_SECONDS = 3600  # a temporary file untouched this long belongs to a dead run
MiB = 1 << 20

_DATASET = re.compile(r"^[a-z][a-z0-9_]*$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# S3 answers that retrying will not fix: a wrong bucket, wrong credentials, no permission,
# or an object gone or replaced while it was read.
_REFUSALS = {
    "NoSuchBucket": "the bucket does not exist",
    "InvalidBucketName": "not a valid bucket name",
    "AccessDenied": "access denied",
    "AllAccessDisabled": "access denied",
    "403": "access denied",
    "Forbidden": "access denied",
    "InvalidAccessKeyId": "unknown access key",
    "SignatureDoesNotMatch": "wrong secret key",
    "ExpiredToken": "expired credentials",
    "InvalidToken": "invalid credentials",
    "404": "not found (removed while it was being mirrored?)",
    "NoSuchKey": "not found (removed while it was being mirrored?)",
    "PreconditionFailed": "replaced while it was being mirrored",
}


class Source(ABC):
    """Where the Shanghai partitions come from."""

    @abstractmethod
    def is_ready(self, dataset: str, day: str) -> bool:
        """Is the day's partition complete (its ``_SUCCESS`` exists)?"""

    @abstractmethod
    def location(self, dataset: str, day: str) -> str:
        """The partition's place in the source, for people (alerts, errors)."""

    @abstractmethod
    def local_partition(self, dataset: str, day: str) -> Path:
        """The complete partition as a local folder (fetched first if need be)."""

    def extract(self, dataset: str, day: str) -> Extract:
        return extract_folder(self.local_partition(dataset, day), dataset, day)


@dataclass(frozen=True)
class FolderSource(Source):
    """``{root}/{dataset}/dt=YYYY-MM-DD/``, read in place."""

    root: Path

    def is_ready(self, dataset: str, day: str) -> bool:
        return is_ready(self.root, dataset, day)

    def location(self, dataset: str, day: str) -> str:
        return str(partition_path(self.root, dataset, day))

    def local_partition(self, dataset: str, day: str) -> Path:
        return partition_path(self.root, dataset, day)


def mirror_root(staging_root: Path | str) -> Path:
    """Where an object-store source is mirrored on the China side."""
    return Path(staging_root) / MIRROR_FOLDER


def default_transfer() -> Any:
    """Ranged downloads of 16 MiB, 8 at a time, written to the file as they arrive."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=16 * MiB,
        multipart_chunksize=16 * MiB,
        max_concurrency=8,
        preferred_transfer_client="classic",
    )


@dataclass(frozen=True)
class S3Source(Source):
    """``s3://{bucket}/{prefix}/{dataset}/dt=YYYY-MM-DD/``, mirrored into ``mirror_root``."""

    bucket: str
    client: Callable[[], Any] = field(repr=False, compare=False)  # makes a boto3 S3 client
    mirror_root: Path
    prefix: str = ""
    transfer: Any = field(default=None, repr=False, compare=False)  # TransferConfig

    def partition_prefix(self, dataset: str, day: str) -> str:
        if not _DATASET.match(dataset) or not _DAY.match(day):
            raise ValueError(f"not a dataset and day: {dataset!r}, {day!r}")
        base = self.prefix.strip("/")
        return (f"{base}/" if base else "") + f"{dataset}/dt={day}/"

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def location(self, dataset: str, day: str) -> str:
        return self.uri(self.partition_prefix(dataset, day))

    def is_ready(self, dataset: str, day: str) -> bool:
        marker = self.partition_prefix(dataset, day) + SUCCESS_MARKER
        with self._errors(dataset, day, marker):
            found = self.client().list_objects_v2(Bucket=self.bucket, Prefix=marker, MaxKeys=1)
        return any(o["Key"] == marker for o in found.get("Contents", []))

    def local_partition(self, dataset: str, day: str) -> Path:
        self.mirror(dataset, day)
        return partition_path(self.mirror_root, dataset, day)

    def mirror(self, dataset: str, day: str) -> list[str]:
        """Bring the mirror up to date with the complete source partition; the names of
        the parts downloaded (none when the mirror already holds them)."""
        prefix = self.partition_prefix(dataset, day)
        s3 = self.client()
        with self._errors(dataset, day, prefix):
            listed = _list(s3, self.bucket, prefix)
        where, locate = self.location(dataset, day), lambda n: self.uri(prefix + n)
        names = part_names(list(listed), where, locate, dataset, day)
        parts = {n: listed[n] for n in names}
        folder = partition_path(self.mirror_root, dataset, day)
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(folder)
        self._refuse_changes(folder, parts, dataset, day, prefix)
        downloaded = [
            name
            for name, obj in parts.items()
            if self._mirror_part(s3, obj, folder / name, dataset, day)
        ]
        if not (folder / SUCCESS_MARKER).exists():
            (folder / SUCCESS_MARKER).touch()  # last: the mirror is complete
        return downloaded

    def _refuse_changes(
        self, folder: Path, parts: dict[str, dict], dataset: str, day: str, prefix: str
    ) -> None:
        """A part mirrored before must still be the same object, and a completely mirrored
        partition must not have gained parts."""
        recorded = {
            path.name[1 : -len(SIDECAR_SUFFIX)]: json.loads(path.read_text())
            for path in sorted(folder.glob(f".*{SIDECAR_SUFFIX}"))
        }
        problems = []
        for name, record in recorded.items():
            obj = parts.get(name)
            if obj is None:
                problems.append((name, "it is no longer in the source"))
            elif (_etag(obj), obj["Size"]) != (record["etag"], record["size"]):
                was = f"ETag {record['etag']}, {record['size']} bytes"
                problems.append((name, f"was {was}, is ETag {_etag(obj)}, {obj['Size']} bytes"))
        # A part in the mirror without a record (renamed into place, then the run died).
        unrecorded = {p.name for p in folder.iterdir() if PART_NAME.match(p.name)} - set(recorded)
        problems += [(n, "it is no longer in the source") for n in sorted(unrecorded - set(parts))]
        if (folder / SUCCESS_MARKER).exists():
            added = sorted(set(parts) - set(recorded))
            problems += [(n, "it is new since the partition was complete") for n in added]
        if problems:
            name, what = problems[0]
            raise PartitionInvalid(
                f"source object changed since the partition was mirrored: {what} "
                f"({len(problems)} object(s) changed); a complete partition must not change. "
                f"Check the re-delivery with the Shanghai store; to take it, delete the mirror "
                f"{folder} and clear extract",
                dataset=dataset,
                day=day,
                file=self.uri(prefix + name),
            )

    def _mirror_part(self, s3: Any, obj: dict, target: Path, dataset: str, day: str) -> bool:
        """Download one part unless the mirror already holds it; True if downloaded."""
        sidecar = target.with_name(f".{target.name}{SIDECAR_SUFFIX}")
        if sidecar.exists() and target.is_file():
            record, stat = json.loads(sidecar.read_text()), target.stat()
            if (stat.st_size, stat.st_mtime_ns) == (record["size"], record["mtime_ns"]):
                return False  # same object (_refuse_changes), same local copy
        key, etag, size = obj["Key"], _etag(obj), obj["Size"]
        temp = target.with_name(f".{target.name}{TEMP_MARK}{uuid.uuid4().hex}")
        try:
            with self._errors(dataset, day, key):
                s3.download_file(
                    self.bucket, key, str(temp), Config=self.transfer or default_transfer()
                )
                now = s3.head_object(Bucket=self.bucket, Key=key)
            got = temp.stat().st_size
            if (_etag(now), now["ContentLength"], got) != (etag, size, size):
                raise PartitionInvalid(
                    f"the object changed while it was being mirrored (listed ETag {etag}, "
                    f"{size} bytes; now ETag {_etag(now)}, {now['ContentLength']} bytes; "
                    f"downloaded {got} bytes)",
                    dataset=dataset,
                    day=day,
                    file=self.uri(key),
                )
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        record = {"key": key, "etag": etag, "size": size, "mtime_ns": target.stat().st_mtime_ns}
        _write_atomically(sidecar, json.dumps(record, sort_keys=True).encode())
        return True

    @contextmanager
    def _errors(self, dataset: str, day: str, key: str) -> Iterator[None]:
        """S3 refusals that retrying cannot fix become PartitionInvalid naming the object;
        anything else (network, throttling, 5xx) propagates, so the task's retries apply."""
        from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code not in _REFUSALS:
                raise
            detail = error.get("Message") or _REFUSALS[code]
            raise PartitionInvalid(
                f"the Shanghai store refused: {_REFUSALS[code]} ({code}: {detail}); check "
                f"connection cn_source (bucket {self.bucket!r}, its credentials and their "
                "s3:ListBucket / s3:GetObject permissions)",
                dataset=dataset,
                day=day,
                file=self.uri(key),
            ) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise PartitionInvalid(
                f"no usable credentials for the Shanghai store ({exc}): check connection cn_source",
                dataset=dataset,
                day=day,
                file=self.uri(key),
            ) from exc


def source_of(settings: Settings) -> Source:
    """The configured source: ``settings.source``, else the folder ``source_root``."""
    return settings.source or FolderSource(settings.source_root)


def _etag(obj: dict) -> str:
    return str(obj["ETag"]).strip('"')


def _list(s3: Any, bucket: str, prefix: str) -> dict[str, dict]:
    """Name below the prefix → listed object (Key, ETag, Size)."""
    found: dict[str, dict] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"][len(prefix) :]] = obj
    return found


def _remove_stale_temps(folder: Path) -> None:
    """Temporary files of a download killed midway (a live one keeps being written)."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for temp in folder.glob(f".*{TEMP_MARK}*"):
        try:
            if temp.stat().st_mtime < cutoff:
                temp.unlink()
        except FileNotFoundError:
            pass  # finished or cleaned by a concurrent run


def _write_atomically(path: Path, data: bytes) -> None:
    temp = path.with_name(f"{path.name}{TEMP_MARK}{uuid.uuid4().hex}")
    try:
        temp.write_bytes(data)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
