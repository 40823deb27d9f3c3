"""The U.S. side: verify, decrypt and land exported partitions, then write a receipt.

``python -m crossborder.receive --endpoint-url URL --bucket B --lake DIR
--private-key FILE --signing-public-key FILE [--dataset D --date YYYY-MM-DD]``
receives one partition, or every pending one.

Nothing is trusted that the signed manifest does not vouch for: the signature is checked
over the exact manifest bytes, every listed object's size and SHA-256 before decryption
and the plaintext's size and SHA-256 after it; objects the manifest does not list are
ignored. Only when every object passed does the partition land in
``{lake}/{dataset}/dt=YYYY-MM-DD/part-NNNNN.parquet`` (staged in a dot-directory beside
it, then renamed into place) and ``receipt.json`` is written next to the manifest::

    receipt_version 1, dataset, partition_date, manifest_sha256, received_at (UTC ISO),
    receiver, lake_path, rows, objects [{key, part, size, sha256, plaintext_size,
    plaintext_sha256, rows}]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass, fields
from datetime import date
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from crossborder import crypto, landing
from crossborder.digest import CHUNK, sha256_file
from crossborder.errors import CrossborderError, IntegrityMismatch
from crossborder.landing import S3Client, error_context
from crossborder.manifest import canonical_json, day_str, parse_manifest, utc_now

log = logging.getLogger(__name__)

RECEIPT_VERSION = 1
_RECORD_FIELDS = ("key", "part", "size", "sha256", "plaintext_size", "plaintext_sha256", "rows")


@dataclass(frozen=True)
class Receipt:
    dataset: str
    partition_date: str
    manifest_sha256: str
    received_at: str
    receiver: str
    lake_path: str
    rows: int
    objects: tuple[dict, ...]

    def to_dict(self) -> dict:
        return {"receipt_version": RECEIPT_VERSION, **asdict(self), "objects": list(self.objects)}

    @classmethod
    def from_dict(cls, data: dict) -> Receipt:
        # Ignore fields we do not know (receipt_version, additions of newer receivers).
        known = {k: data[k] for k in (f.name for f in fields(cls))}
        return cls(**{**known, "objects": tuple(known["objects"])})


def lake_dir(lake_root: Path, dataset: str, day: date | str) -> Path:
    return Path(lake_root) / landing.partition_prefix(dataset, day).rstrip("/")


def pending_partitions(s3: S3Client, bucket: str) -> list[tuple[str, str]]:
    """(dataset, day) of partitions with a manifest but no receipt for that manifest."""
    pending = []
    for dataset, day, key in _manifest_keys(s3, bucket):
        with error_context(dataset, day, key):
            data = landing.get_bytes(s3, bucket, key)
            if data is None:  # withdrawn since the listing
                continue
            if _receipt(s3, bucket, dataset, day, hashlib.sha256(data).hexdigest()) is None:
                pending.append((dataset, day))
    return sorted(pending)


def _manifest_keys(s3: S3Client, bucket: str) -> list[tuple[str, str, str]]:
    """(dataset, day, key) of every manifest laid out as {dataset}/dt=YYYY-MM-DD/manifest.json.

    Other manifest.json keys are logged and skipped: one odd key must not stop receiving.
    """
    found = []
    for key in landing.list_keys(s3, bucket, ""):
        if key.rpartition("/")[2] != landing.MANIFEST_NAME:
            continue
        try:
            dataset, day, _ = landing.split_key(key)
        except ValueError as exc:
            log.warning("skipping %s: not a partition manifest (%s)", key, exc)
            continue
        found.append((dataset, day, key))
    return found


def _receipt(
    s3: S3Client, bucket: str, dataset: str, day: str, manifest_sha256: str
) -> dict | None:
    """Our receipt for exactly this manifest; an unreadable one counts as none (rewritten)."""
    data = landing.get_bytes(s3, bucket, landing.receipt_key(dataset, day))
    try:
        receipt = json.loads(data) if data is not None else None
    except ValueError:
        return None
    if isinstance(receipt, dict) and receipt.get("manifest_sha256") == manifest_sha256:
        return receipt
    return None


def receive_partition(
    s3: S3Client,
    bucket: str,
    dataset: str,
    day: date | str,
    lake_root: Path,
    recipient_private_pem: bytes,
    signing_public_pem: bytes,
    *,
    receiver: str | None = None,
) -> Receipt:
    """Verify, decrypt and land one partition, then write its receipt.

    IntegrityMismatch when anything does not match the signed manifest (KeyUnavailable
    for an unusable key, UploadFailed when S3 or the disk fail); then nothing lands and
    no receipt is written.
    """
    day = day_str(day)
    with error_context(dataset, day, landing.manifest_key(dataset, day)):
        data, manifest = _verified_manifest(s3, bucket, dataset, day, signing_public_pem)
        recipient = crypto.load_recipient_key(recipient_private_pem)
        _check_encryption(manifest, recipient)
        manifest_sha256 = hashlib.sha256(data).hexdigest()
        target = lake_dir(lake_root, dataset, day)
        receipt = _receipt(s3, bucket, dataset, day, manifest_sha256)
        if receipt is not None and _landed(target, manifest["objects"]):
            return Receipt.from_dict(receipt)  # already received: change nothing
    with error_context(dataset, day, str(target)):
        objects = _land(s3, bucket, manifest, target, recipient)
    receipt = Receipt(
        dataset=dataset,
        partition_date=day,
        manifest_sha256=manifest_sha256,
        received_at=utc_now(),
        receiver=receiver or socket.gethostname(),
        lake_path=str(target.resolve()),
        rows=sum(o["rows"] for o in objects),
        objects=tuple(objects),
    )
    key = landing.receipt_key(dataset, day)
    with error_context(dataset, day, key):
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=canonical_json(receipt.to_dict()),
            ContentType="application/json",
        )
    return receipt


def _verified_manifest(
    s3: S3Client, bucket: str, dataset: str, day: str, signing_public_pem: bytes
) -> tuple[bytes, dict]:
    """The manifest's exact bytes and content, once its signature and layout check out."""
    data = landing.get_bytes(s3, bucket, landing.manifest_key(dataset, day))
    if data is None:
        raise IntegrityMismatch("no manifest: the partition is not published")
    signature = landing.get_bytes(s3, bucket, landing.signature_key(dataset, day))
    if signature is None:
        raise IntegrityMismatch(f"the manifest has no signature ({landing.SIGNATURE_NAME})")
    crypto.verify_signature(data, signature, signing_public_pem)
    manifest = parse_manifest(data, dataset=dataset, day=day)
    if problems := landing.object_key_problems(manifest):
        raise IntegrityMismatch(
            "manifest lists objects outside the partition: " + "; ".join(problems)
        )
    return data, manifest


def _check_encryption(manifest: dict, recipient: crypto.RecipientKey) -> None:
    """Refuse unless the manifest says its objects are encrypted the way we decrypt."""
    ours = crypto.encryption_info(recipient.public_pem)
    theirs = manifest["encryption"]
    wrong = [
        f"{k} {theirs[k]!r} (expected {v!r})"
        for k, v in ours.items()
        if k != "frame_length" and theirs[k] != v  # any frame length decrypts
    ]
    if wrong:
        raise IntegrityMismatch("objects are not encrypted for this receiver: " + "; ".join(wrong))


def _landed(target: Path, objects: list[dict]) -> bool:
    """Does the lake already hold exactly these plaintext files?"""
    if not target.is_dir() or {p.name for p in target.iterdir()} != {o["part"] for o in objects}:
        return False
    return all(
        sha256_file(target / o["part"]) == (o["plaintext_sha256"], o["plaintext_size"])
        for o in objects
    )


def _land(
    s3: S3Client, bucket: str, manifest: dict, target: Path, recipient: crypto.RecipientKey
) -> list[dict]:
    """Verify and decrypt every object into a staging directory, then swap it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Dot-prefixed: lake readers (Hive, Spark, pyarrow) skip it; same filesystem: rename works.
    staging = Path(tempfile.mkdtemp(prefix=f".incoming-{target.name}-", dir=target.parent))
    try:
        objects = [
            _receive_object(s3, bucket, manifest, obj, staging, recipient)
            for obj in manifest["objects"]
        ]
        _swap_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return objects


def _receive_object(
    s3: S3Client,
    bucket: str,
    manifest: dict,
    obj: dict,
    staging: Path,
    recipient: crypto.RecipientKey,
) -> dict:
    """Download, check, decrypt and check one object; the verified record."""
    dataset, day, key = manifest["dataset"], manifest["partition_date"], obj["key"]
    ciphertext = staging / f".{obj['part']}{landing.ENCRYPTED_SUFFIX}"
    with error_context(dataset, day, key):
        try:
            sha256, size = _download(s3, bucket, key, ciphertext)
            _expect("ciphertext", (sha256, size), (obj["sha256"], obj["size"]))
            # The SDK only unwraps a data key wrapped for our key id: others are refused.
            plain = crypto.decrypt_file(ciphertext, staging / obj["part"], recipient)
        finally:
            ciphertext.unlink(missing_ok=True)
        _expect(
            "plaintext",
            (plain.plaintext_sha256, plain.plaintext_size),
            (obj["plaintext_sha256"], obj["plaintext_size"]),
        )
    return {field: obj[field] for field in _RECORD_FIELDS}


def _expect(what: str, got: tuple[str, int], want: tuple[str, int]) -> None:
    if got != want:
        raise IntegrityMismatch(
            f"{what} is {got[1]} bytes with SHA-256 {got[0]}; "
            f"the manifest says {want[1]} bytes with SHA-256 {want[0]}"
        )


def _download(s3: S3Client, bucket: str, key: str, path: Path) -> tuple[str, int]:
    """Stream an object to path; (sha256 hex, size) of what arrived."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        if landing.is_missing(exc):
            raise IntegrityMismatch("object listed in the manifest is missing") from None
        raise
    digest, size = hashlib.sha256(), 0
    with path.open("wb") as out:
        for chunk in body.iter_chunks(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return digest.hexdigest(), size


def _swap_into_place(staging: Path, target: Path) -> None:
    """Replace target by staging with two renames; readers never see a half partition."""
    old = target.with_name(f".replaced-{target.name}-{uuid.uuid4().hex}")
    if target.exists():
        os.rename(target, old)
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)


# --- command line -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m crossborder.receive",
        description="Receive exported partitions from the U.S. landing bucket into the lake.",
    )
    parser.add_argument("--endpoint-url", help="S3 endpoint (default: AWS)")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--lake", required=True, type=Path, help="root of the U.S. lake")
    parser.add_argument("--private-key", required=True, type=Path, help="recipient RSA PEM")
    parser.add_argument("--signing-public-key", required=True, type=Path, help="Ed25519 PEM")
    parser.add_argument("--dataset", help="one partition only (with --date)")
    parser.add_argument("--date", help="YYYY-MM-DD (with --dataset)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.dataset is None) != (args.date is None):
        parser.error("--dataset and --date go together")
    try:
        private_pem = crypto.read_key_file(args.private_key, "recipient private key")
        signing_pem = crypto.read_key_file(args.signing_public_key, "signing public key")
        s3 = boto3.client("s3", endpoint_url=args.endpoint_url)
        if args.dataset:
            landing.partition_prefix(args.dataset, args.date)  # ValueError if malformed
            partitions = [(args.dataset, args.date)]
        else:
            partitions = pending_partitions(s3, args.bucket)
    except (CrossborderError, ValueError, BotoCoreError, ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = 0
    for dataset, day in partitions:
        try:
            receipt = receive_partition(
                s3, args.bucket, dataset, day, args.lake, private_pem, signing_pem
            )
        except CrossborderError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        objects, rows, lake = len(receipt.objects), receipt.rows, receipt.lake_path
        print(f"{dataset} {day} objects={objects} rows={rows} lake={lake}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
