"""The U.S. landing bucket as seen from the China exporter: idempotent and crash-safe.

Layout of one exported partition::

    {dataset}/dt=YYYY-MM-DD/part-NNNNN.parquet.encrypted   AWS Encryption SDK messages
    {dataset}/dt=YYYY-MM-DD/manifest.json.sig              written just before the manifest
    {dataset}/dt=YYYY-MM-DD/manifest.json                  written last: the commit marker
    {dataset}/dt=YYYY-MM-DD/receipt.json                   written by the U.S. receiver

Order of a (re-)run: ``prepare_partition`` (abort interrupted multipart uploads, withdraw
a manifest that would no longer match, e.g. after the recipient key rotated) →
``upload_encrypted`` per file (reuses an object that already holds the same plaintext for
the same key; before replacing an object it withdraws a manifest listing it) →
``publish_manifest`` (checks every object, removes strays, writes signature then
manifest). A visible manifest thus always has its signature and always matches the
objects next to it.

Each encrypted object carries user metadata ``plaintext-sha256``, ``plaintext-size``,
``sha256`` (ciphertext), ``size`` (ciphertext), ``key-id`` and ``s3-checksum`` (the
ChecksumSHA256 S3 should store, composite for multipart objects). ``object_mismatches``
is the one check of a stored object against expectations: on reuse, after upload and
before publishing (moto does not verify checksums itself).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.utils import ChunksizeAdjuster

from crossborder import crypto
from crossborder.digest import CHUNK, sha256_file
from crossborder.errors import CrossborderError, IntegrityMismatch, UploadFailed
from crossborder.manifest import (
    PART_NAME,
    day_str,
    manifest_bytes,
    parse_manifest,
    same_content,
)

MiB = 1 << 20
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
RECEIPT_NAME = "receipt.json"
ENCRYPTED_SUFFIX = ".encrypted"
CONTROL_FILES = (MANIFEST_NAME, SIGNATURE_NAME, RECEIPT_NAME)

METADATA_FIELDS = ("plaintext-sha256", "plaintext-size", "sha256", "size", "key-id", "s3-checksum")

_DATASET = re.compile(r"^[a-z][a-z0-9_]*$")
_KEY = re.compile(r"^(?P<dataset>[^/]+)/dt=(?P<day>[^/]+)/(?P<name>[^/]+)$")

S3Client = Any  # boto3's client type is generated at run time


# --- layout -----------------------------------------------------------------------------


def partition_prefix(dataset: str, day: date | str) -> str:
    if not _DATASET.match(dataset):
        raise ValueError(f"not a dataset name: {dataset!r}")
    return f"{dataset}/dt={day_str(day)}/"


def object_key(dataset: str, day: date | str, part_name: str) -> str:
    """ "part-00000.parquet" → "{dataset}/dt={day}/part-00000.parquet.encrypted"."""
    if not PART_NAME.match(part_name):
        raise ValueError(f"not a part name like part-00000.parquet: {part_name!r}")
    return partition_prefix(dataset, day) + part_name + ENCRYPTED_SUFFIX


def manifest_key(dataset: str, day: date | str) -> str:
    return partition_prefix(dataset, day) + MANIFEST_NAME


def signature_key(dataset: str, day: date | str) -> str:
    return partition_prefix(dataset, day) + SIGNATURE_NAME


def receipt_key(dataset: str, day: date | str) -> str:
    return partition_prefix(dataset, day) + RECEIPT_NAME


def split_key(key: str) -> tuple[str, str, str]:
    """ "{dataset}/dt={day}/{name}" → (dataset, day, name); ValueError for other keys,
    including a malformed dataset name or an impossible day such as 2024-02-30."""
    match = _KEY.match(key)
    if not match:
        raise ValueError(f"not a partition key: {key!r}")
    partition_prefix(match["dataset"], match["day"])  # validates both
    return match["dataset"], match["day"], match["name"]


def object_key_problems(manifest: dict) -> list[str]:
    """Objects whose key is not where the layout puts their part (the receiver refuses them)."""
    dataset, day = manifest["dataset"], manifest["partition_date"]
    return [
        f"object {o['key']!r} is not at {object_key(dataset, day, o['part'])!r}"
        for o in manifest["objects"]
        if o["key"] != object_key(dataset, day, o["part"])
    ]


# --- errors and small S3 helpers --------------------------------------------------------


@contextmanager
def error_context(
    dataset: str, day: str, key: str | None, failure: type[CrossborderError] = UploadFailed
) -> Iterator[None]:
    """Name dataset/day/key on every error raised inside; S3 and OS errors become `failure`."""
    try:
        yield
    except CrossborderError as exc:
        if exc.dataset or exc.day or exc.file:
            raise
        raise type(exc)(exc.detail, dataset=dataset, day=day, file=key) from exc
    except (ClientError, BotoCoreError, Boto3Error, OSError) as exc:
        raise failure(f"{type(exc).__name__}: {exc}", dataset=dataset, day=day, file=key) from exc


def is_missing(exc: ClientError) -> bool:
    """Is this S3 error a plain 'no such object'?"""
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def head(s3: S3Client, bucket: str, key: str) -> dict | None:
    """head_object with the stored checksum, or None when the object does not exist."""
    try:
        return s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def get_bytes(s3: S3Client, bucket: str, key: str) -> bytes | None:
    """A small object's bytes, or None when it does not exist."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def list_keys(s3: S3Client, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def read_receipt(s3: S3Client, bucket: str, dataset: str, day: date | str) -> dict | None:
    """The U.S. receiver's receipt for the partition, or None if it has not received it."""
    key = receipt_key(dataset, day)
    with error_context(dataset, day_str(day), key):
        data = get_bytes(s3, bucket, key)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise IntegrityMismatch("receipt is not valid JSON") from None


# --- checksums --------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferSettings:
    """How objects are uploaded; the part size also defines the expected S3 checksum."""

    multipart_threshold: int = 64 * MiB
    part_size: int = 64 * MiB
    max_concurrency: int = 4

    def is_multipart(self, size: int) -> bool:
        return size >= self.multipart_threshold  # the rule s3transfer applies

    def part_size_for(self, size: int) -> int:
        # s3transfer bends the part size to S3's limits (>= 5 MiB, <= 10,000 parts).
        return ChunksizeAdjuster().adjust_chunksize(self.part_size, size)

    def config(self, size: int) -> TransferConfig:
        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.part_size_for(size),
            max_concurrency=self.max_concurrency,
            # The classic client cuts parts exactly as computed above; CRT picks its own.
            preferred_transfer_client="classic",
        )


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def expected_s3_checksum(
    path: Path, encrypted: crypto.EncryptedFile, transfer: TransferSettings
) -> str:
    """The ChecksumSHA256 S3 will store: full-object, or composite "b64(sha256(part digests))-N"."""
    size = encrypted.ciphertext_size
    if not transfer.is_multipart(size):
        return _b64(bytes.fromhex(encrypted.ciphertext_sha256))
    part_size, digests = transfer.part_size_for(size), hashlib.sha256()
    parts = math.ceil(size / part_size)
    with path.open("rb") as f:
        for _ in range(parts):
            part, remaining = hashlib.sha256(), part_size
            while remaining and (chunk := f.read(min(CHUNK, remaining))):
                part.update(chunk)
                remaining -= len(chunk)
            digests.update(part.digest())
    return f"{_b64(digests.digest())}-{parts}"


def checksum_matches(stored: str | None, expected: str) -> bool:
    # moto's head_object leaves off the "-N" part count that S3 (and moto's GET) shows.
    if not stored:
        return False
    got, _, got_parts = stored.partition("-")
    want, _, want_parts = expected.partition("-")
    return got == want and got_parts in ("", want_parts)


# --- upload -----------------------------------------------------------------------------


def _metadata(encrypted: crypto.EncryptedFile, s3_checksum: str) -> dict[str, str]:
    values = (
        encrypted.plaintext_sha256,
        str(encrypted.plaintext_size),
        encrypted.ciphertext_sha256,
        str(encrypted.ciphertext_size),
        encrypted.key_id,
        s3_checksum,
    )
    return dict(zip(METADATA_FIELDS, values, strict=True))


def _record(key: str, meta: dict[str, str], rows: int) -> dict:
    """The manifest's record of one object, from the object's metadata."""
    return {
        "key": key,
        "part": split_key(key)[2].removesuffix(ENCRYPTED_SUFFIX),
        "size": int(meta["size"]),
        "sha256": meta["sha256"],
        "plaintext_size": int(meta["plaintext-size"]),
        "plaintext_sha256": meta["plaintext-sha256"],
        "rows": rows,
    }


def object_mismatches(found: dict | None, expected: dict[str, str]) -> list[str]:
    """How a stored object (its head_object) differs from expected metadata; [] if it matches.

    Besides the expected values, the object must carry all our metadata and agree with
    it: its length is ``size``, its stored checksum is ``s3-checksum``. So a head that
    passes vouches for bytes whose SHA-256 is ``sha256`` (as far as S3 checksums do).
    """
    if found is None:
        return ["is missing"]
    meta = found.get("Metadata", {})
    if missing := [name for name in METADATA_FIELDS if name not in meta]:
        return [f"lacks metadata {', '.join(missing)}"]
    problems = [
        f"has {name} {meta[name]!r}, expected {value!r}"
        for name, value in expected.items()
        if meta.get(name) != value
    ]
    if str(found["ContentLength"]) != meta["size"]:
        problems.append(f"has {found['ContentLength']} bytes, its metadata says {meta['size']}")
    if not checksum_matches(found.get("ChecksumSHA256"), meta["s3-checksum"]):
        problems.append(
            f"has checksum {found.get('ChecksumSHA256')}, its metadata says {meta['s3-checksum']}"
        )
    return problems


def _parquet_rows(path: Path) -> int:
    try:
        return pq.read_metadata(path).num_rows
    except Exception as exc:  # pyarrow raises several types for a bad footer
        raise UploadFailed(f"{path.name} is not a readable Parquet file: {exc}") from None


def upload_encrypted(
    s3: S3Client,
    bucket: str,
    key: str,
    plaintext: Path,
    recipient_public_pem: bytes,
    workdir: Path,
    transfer: TransferSettings | None = None,
    *,
    expected_plaintext_sha256: str | None = None,
) -> dict:
    """Encrypt plaintext for the recipient, upload it to key, verify it; return its record.

    An object already holding the same plaintext for the same key id is reused as is.
    expected_plaintext_sha256 (from the plan) guards against a staged file that changed.
    """
    transfer = transfer or TransferSettings()
    dataset, day, _ = split_key(key)
    with error_context(dataset, day, key):
        plaintext = Path(plaintext)
        rows = _parquet_rows(plaintext)
        plaintext_sha256, plaintext_size = sha256_file(plaintext)
        if expected_plaintext_sha256 not in (None, plaintext_sha256):
            raise IntegrityMismatch("staged file changed since it was planned")
        # An Airflow retry of a killed upload comes here without prepare_partition.
        _abort_multipart_uploads(s3, bucket, key, exact=True)
        wanted = {
            "plaintext-sha256": plaintext_sha256,
            "plaintext-size": str(plaintext_size),
            "key-id": crypto.key_id(recipient_public_pem),
        }
        found = head(s3, bucket, key)
        if found is not None and not object_mismatches(found, wanted):
            return _record(key, found["Metadata"], rows)
        if found is not None:
            _withdraw_manifest_listing(s3, bucket, dataset, day, key)
        ciphertext = Path(workdir) / f".{uuid.uuid4().hex}{ENCRYPTED_SUFFIX}"
        try:
            encrypted = crypto.encrypt_file(plaintext, ciphertext, recipient_public_pem)
            if encrypted.plaintext_sha256 != plaintext_sha256:
                raise UploadFailed("plaintext changed while it was being exported")
            meta = _metadata(encrypted, expected_s3_checksum(ciphertext, encrypted, transfer))
            _upload(s3, bucket, key, ciphertext, meta, transfer.config(encrypted.ciphertext_size))
        finally:
            ciphertext.unlink(missing_ok=True)
        _verify_upload(s3, bucket, key, meta)
        return _record(key, meta, rows)


def _upload(
    s3: S3Client, bucket: str, key: str, path: Path, meta: dict[str, str], config: TransferConfig
) -> None:
    extra = {"ChecksumAlgorithm": "SHA256", "ContentType": "application/octet-stream"}
    s3.upload_file(str(path), bucket, key, ExtraArgs={**extra, "Metadata": meta}, Config=config)


def _verify_upload(s3: S3Client, bucket: str, key: str, meta: dict[str, str]) -> None:
    if problems := object_mismatches(head(s3, bucket, key), meta):
        # Never leave a bad object that a later run could mistake for a good one.
        s3.delete_object(Bucket=bucket, Key=key)
        raise IntegrityMismatch(
            "uploaded object differs from what was sent: " + "; ".join(problems)
        )


# --- prepare and publish ----------------------------------------------------------------


@dataclass(frozen=True)
class PrepareResult:
    prefix: str
    aborted_uploads: int
    already_published: bool
    withdrawn_manifest: bool


@dataclass(frozen=True)
class PublishedManifest:
    uri: str
    sha256: str  # of the manifest bytes now visible
    keys: tuple[str, ...]
    unchanged: bool  # an equivalent manifest was already published


def prepare_partition(
    s3: S3Client,
    bucket: str,
    dataset: str,
    day: date | str,
    planned: dict[str, str],
    recipient_key_id: str,
) -> PrepareResult:
    """Make the partition safe to (re-)upload: planned maps object key → plaintext sha256.

    Aborts interrupted multipart uploads under the prefix (one run owns a partition at a
    time), and withdraws a published manifest unless it lists exactly the planned files,
    encrypted for recipient_key_id, in which case there is nothing to do
    (``already_published``).
    """
    day = day_str(day)
    prefix = partition_prefix(dataset, day)
    if stray := [k for k in planned if not k.startswith(prefix)]:
        raise ValueError(f"planned keys outside {prefix}: {stray}")
    with error_context(dataset, day, prefix):
        aborted = _abort_multipart_uploads(s3, bucket, prefix)
        current = _current_manifest(s3, bucket, dataset, day)
        parsed = current.parsed if current is not None else None
        if parsed is not None and _is_published(
            s3, bucket, dataset, day, parsed, planned, recipient_key_id
        ):
            return PrepareResult(prefix, aborted, already_published=True, withdrawn_manifest=False)
        if current is not None or head(s3, bucket, signature_key(dataset, day)) is not None:
            withdraw_manifest(s3, bucket, dataset, day)
        return PrepareResult(
            prefix, aborted, already_published=False, withdrawn_manifest=current is not None
        )


def _abort_multipart_uploads(s3: S3Client, bucket: str, prefix: str, exact: bool = False) -> int:
    """Abort unfinished multipart uploads under prefix (exact: only of the key prefix)."""
    pages = s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
    uploads = [
        u for page in pages for u in page.get("Uploads", []) if not exact or u["Key"] == prefix
    ]
    for upload in uploads:
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    return len(uploads)


@dataclass(frozen=True)
class _Current:
    """The manifest now visible: its exact bytes, and its content if it is valid."""

    data: bytes
    parsed: dict | None

    def equivalent_to(self, manifest: dict) -> bool:
        """Same export, stored as our canonical bytes: nothing to (re)write."""
        return (
            self.parsed is not None
            and same_content(self.parsed, manifest)
            and self.data == manifest_bytes(self.parsed)
        )


def _current_manifest(s3: S3Client, bucket: str, dataset: str, day: str) -> _Current | None:
    data = get_bytes(s3, bucket, manifest_key(dataset, day))
    if data is None:
        return None
    try:
        return _Current(data, parse_manifest(data, dataset=dataset, day=day))
    except IntegrityMismatch:
        return _Current(data, None)  # unreadable: it will be withdrawn


def _is_published(
    s3: S3Client,
    bucket: str,
    dataset: str,
    day: str,
    manifest: dict,
    planned: dict[str, str],
    recipient_key_id: str,
) -> bool:
    """Does the visible manifest already publish the planned files for the current key?"""
    listed = {o["key"]: o["plaintext_sha256"] for o in manifest["objects"]}
    return (
        listed == planned
        and manifest["encryption"]["key_id"] == recipient_key_id
        and head(s3, bucket, signature_key(dataset, day)) is not None
        and not object_problems(s3, bucket, manifest["objects"], recipient_key_id)
    )


def withdraw_manifest(s3: S3Client, bucket: str, dataset: str, day: date | str) -> None:
    """Hide the partition from the receiver: manifest first, then its signature."""
    s3.delete_object(Bucket=bucket, Key=manifest_key(dataset, day))
    s3.delete_object(Bucket=bucket, Key=signature_key(dataset, day))


def _withdraw_manifest_listing(s3: S3Client, bucket: str, dataset: str, day: str, key: str) -> None:
    """Before key is replaced: withdraw a visible manifest that lists it (or is unreadable)."""
    current = _current_manifest(s3, bucket, dataset, day)
    if current is not None and (
        current.parsed is None or key in {o["key"] for o in current.parsed["objects"]}
    ):
        withdraw_manifest(s3, bucket, dataset, day)


def object_problems(s3: S3Client, bucket: str, objects: list[dict], key_id: str) -> list[str]:
    """Listed objects that are missing or differ from their manifest record or key id."""
    problems = []
    for obj in objects:
        expected = {
            "plaintext-sha256": obj["plaintext_sha256"],
            "plaintext-size": str(obj["plaintext_size"]),
            "sha256": obj["sha256"],
            "size": str(obj["size"]),
            "key-id": key_id,
        }
        found = head(s3, bucket, obj["key"])
        problems += [f"{obj['key']} {p}" for p in object_mismatches(found, expected)]
    return problems


def publish_manifest(
    s3: S3Client,
    bucket: str,
    dataset: str,
    day: date | str,
    manifest: dict,
    signing_private_pem: bytes,
) -> PublishedManifest:
    """Commit the partition: check objects, drop strays, write signature, then manifest.

    Idempotent: an equivalent manifest already published (same content, ignoring
    created_at) is left as it is; a different one is withdrawn first.
    """
    day = day_str(day)
    key = manifest_key(dataset, day)
    with error_context(dataset, day, key):
        data = manifest_bytes(manifest)
        manifest = parse_manifest(data, dataset=dataset, day=day)
        key_id = manifest["encryption"]["key_id"]
        problems = object_key_problems(manifest)
        problems += object_problems(s3, bucket, manifest["objects"], key_id)
        if problems:
            raise IntegrityMismatch("refusing to publish: " + "; ".join(problems))
        current = _current_manifest(s3, bucket, dataset, day)
        unchanged = current is not None and current.equivalent_to(manifest)
        if unchanged:
            data = current.data  # keep the visible bytes, hence its hash and receipt
        signature = crypto.sign(data, signing_private_pem)  # a bad key fails before any change
        if current is not None and not unchanged:
            withdraw_manifest(s3, bucket, dataset, day)
        _delete_strays(s3, bucket, partition_prefix(dataset, day), manifest["objects"])
        if get_bytes(s3, bucket, signature_key(dataset, day)) != signature:
            s3.put_object(Bucket=bucket, Key=signature_key(dataset, day), Body=signature)
        if not unchanged:
            _put_new(s3, bucket, key, data)
    return PublishedManifest(
        uri=f"s3://{bucket}/{key}",
        sha256=hashlib.sha256(data).hexdigest(),
        keys=tuple(o["key"] for o in manifest["objects"]),
        unchanged=unchanged,
    )


def _delete_strays(s3: S3Client, bucket: str, prefix: str, objects: list[dict]) -> None:
    """Remove leftovers of older exports; the receiver would ignore them, people would not."""
    keep = {o["key"] for o in objects} | {prefix + name for name in CONTROL_FILES}
    for key in list_keys(s3, bucket, prefix):
        if key not in keep:
            s3.delete_object(Bucket=bucket, Key=key)


def _put_new(s3: S3Client, bucket: str, key: str, data: bytes) -> None:
    """Create-only write: losing a race to another publisher must not go unnoticed."""
    try:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=data,
            IfNoneMatch="*",
            ContentType="application/json",
            ChecksumAlgorithm="SHA256",
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
            raise UploadFailed("another run published a manifest at the same time") from exc
        raise
