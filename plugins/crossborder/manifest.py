"""The manifest: commit marker and contract of one exported partition.

``s3://{bucket}/{dataset}/dt=YYYY-MM-DD/manifest.json`` is written last; a partition
exists for the U.S. receiver only once its manifest is visible, and the receiver trusts
nothing the manifest does not vouch for. ``manifest.json.sig`` holds the Ed25519
signature of the exact manifest bytes.

Bytes: canonical JSON (sorted keys, UTF-8, indent 2, trailing newline), so the same
content always gives the same bytes, hash and signature.

Fields (version 1)::

    manifest_version  1
    dataset           e.g. "vehicle_telemetry"
    partition_date    Shanghai day, "YYYY-MM-DD"
    route             "cleared" | "cac_review"   (blocked data is never exported)
    policy_version    hash of the dataset's policy file
    dag_run_id        Airflow run that produced the export
    created_at        UTC ISO 8601 timestamp (informational; ignored when comparing)
    rows_in, rows_out rows extracted / rows exported (rows_out == sum of objects' rows)
    quality           {suite name: result}, e.g. {"vehicle_telemetry.raw": {"success": true}}
    approvals         [{"by", "at", "cac_reference"}, ...]; at least one for cac_review
    anonymization     evidence: {"policy_version", "columns": {name: {"class", "transform",
                       "options"}}, "pseudonym_key_id", "scrubbed": {kind: rows},
                       "sensitive_areas", "k_anonymity", "verification": {"status",
                       "suite", "pii": {column: {detector: rows}}, "k_anonymity", ...}}
    encryption        {"format": "aws-encryption-sdk-message", "algorithm", "frame_length",
                       "key_provider", "key_id", "wrapping"}
    objects           [{"key", "part", "size", "sha256", "plaintext_size",
                        "plaintext_sha256", "rows"}]  sizes in bytes, sha256 as hex;
                       size/sha256 are of the ciphertext object, part is "part-NNNNN.parquet"
    lineage           {"export": n, "supersedes": null | {"manifest_sha256", "dag_run_id",
                       "policy_version"}}: the n-th manifest published for this day and
                       the one it replaces (a re-export after a policy change); optional
    extra             {} free-form, informational, not validated
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from typing import Any

from crossborder.errors import IntegrityMismatch

MANIFEST_VERSION = 1
EXPORTABLE_ROUTES = ("cleared", "cac_review")
# Fields that may differ between two manifests of the same export (a task retry).
VOLATILE_FIELDS = ("created_at",)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
PART_NAME = re.compile(r"^part-\d{5}\.parquet$")

_TOP_LEVEL: dict[str, type] = {
    "manifest_version": int,
    "dataset": str,
    "partition_date": str,
    "route": str,
    "policy_version": str,
    "dag_run_id": str,
    "created_at": str,
    "rows_in": int,
    "rows_out": int,
    "quality": dict,
    "approvals": list,
    "encryption": dict,
    "objects": list,
}
_ENCRYPTION = {
    "format": str,
    "algorithm": str,
    "frame_length": int,
    "key_provider": str,
    "key_id": str,
    "wrapping": str,
}
_OBJECT = {
    "key": str,
    "part": str,
    "size": int,
    "sha256": str,
    "plaintext_size": int,
    "plaintext_sha256": str,
    "rows": int,
}
_APPROVAL = {"by": str, "at": str, "cac_reference": str}


def day_str(day: date | str) -> str:
    """A Shanghai day as "YYYY-MM-DD"; ValueError for anything else."""
    text = day.isoformat() if isinstance(day, date) else day
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f"not a YYYY-MM-DD day: {text!r}")
    date.fromisoformat(text)  # rejects 2024-02-30
    return text


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def build_manifest(
    *,
    dataset: str,
    partition_date: date | str,
    route: str,
    policy_version: str,
    dag_run_id: str,
    rows_in: int,
    rows_out: int,
    quality: dict,
    objects: list[dict],
    encryption: dict,
    approvals: list[dict] | None = None,
    anonymization: dict | None = None,
    lineage: dict | None = None,
    extra: dict | None = None,
    created_at: str | None = None,
) -> dict:
    """Assemble a manifest and validate it exactly as the receiver will."""
    day = day_str(partition_date)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "dataset": dataset,
        "partition_date": day,
        "route": route,
        "policy_version": policy_version,
        "dag_run_id": dag_run_id,
        "created_at": created_at or utc_now(),
        "rows_in": rows_in,
        "rows_out": rows_out,
        "quality": quality,
        "approvals": list(approvals or []),
        "anonymization": dict(anonymization or {}),
        "encryption": dict(encryption),
        "objects": sorted((dict(o) for o in objects), key=lambda o: o.get("part", "")),
        "lineage": dict(lineage or {"export": 1, "supersedes": None}),
        "extra": dict(extra or {}),
    }
    _raise_if_invalid(manifest, dataset=dataset, day=day, action="refusing to build manifest")
    return manifest


def manifest_bytes(manifest: dict) -> bytes:
    """Canonical bytes: the same content always gives the same bytes (and signature)."""
    return canonical_json(manifest)


def canonical_json(document: dict) -> bytes:
    text = json.dumps(document, sort_keys=True, ensure_ascii=False, indent=2)
    return (text + "\n").encode("utf-8")


def parse_manifest(data: bytes, *, dataset: str, day: date | str) -> dict:
    """Decode and validate a manifest found at dataset/day; IntegrityMismatch if unusable."""
    day = day_str(day)
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityMismatch(
            f"manifest is not valid UTF-8 JSON: {exc}", dataset=dataset, day=day
        ) from None
    if not isinstance(manifest, dict):
        raise IntegrityMismatch("manifest is not a JSON object", dataset=dataset, day=day)
    _raise_if_invalid(manifest, dataset=dataset, day=day, action="invalid manifest")
    return manifest


def same_content(a: dict, b: dict) -> bool:
    """True when two manifests describe the same export (ignoring VOLATILE_FIELDS)."""

    def stable(m: dict) -> dict:
        return {k: v for k, v in m.items() if k not in VOLATILE_FIELDS}

    return stable(a) == stable(b)


def _raise_if_invalid(manifest: dict, *, dataset: str, day: str, action: str) -> None:
    problems = manifest_problems(manifest, dataset=dataset, day=day)
    if problems:
        raise IntegrityMismatch(
            f"{action}: " + "; ".join(problems), dataset=dataset, day=day, file="manifest.json"
        )


def manifest_problems(manifest: dict, *, dataset: str, day: str) -> list[str]:
    """Everything wrong with a manifest found at dataset/day, in plain words."""
    problems = _field_problems(manifest, _TOP_LEVEL, "")
    if problems:  # the checks below need the fields to be there
        return problems
    if manifest["manifest_version"] != MANIFEST_VERSION:
        problems.append(f"manifest_version {manifest['manifest_version']} is not supported")
    if manifest["dataset"] != dataset:
        problems.append(f"dataset {manifest['dataset']!r} does not match its location {dataset!r}")
    if manifest["partition_date"] != day:
        problems.append(f"partition_date {manifest['partition_date']!r} does not match {day!r}")
    for optional in ("extra", "anonymization", "lineage"):
        if not isinstance(manifest.get(optional, {}), dict):
            problems.append(f"{optional} must be an object")
    problems += _route_problems(manifest["route"], manifest["approvals"])
    problems += _field_problems(manifest["encryption"], _ENCRYPTION, "encryption.")
    problems += _objects_problems(manifest["objects"], manifest["rows_out"])
    return problems


def _route_problems(route: str, approvals: list) -> list[str]:
    problems = []
    if route not in EXPORTABLE_ROUTES:
        problems.append(f"route {route!r} is not exportable (allowed: {EXPORTABLE_ROUTES})")
    for i, approval in enumerate(approvals):
        problems += _field_problems(approval, _APPROVAL, f"approvals[{i}].")
    if route == "cac_review" and not approvals:
        problems.append("route cac_review needs at least one approval with a CAC reference")
    return problems


def _objects_problems(objects: list, rows_out: int) -> list[str]:
    problems: list[str] = []
    for i, obj in enumerate(objects):
        where = f"objects[{i}]."
        found = _field_problems(obj, _OBJECT, where)
        if found:
            problems += found
            continue
        if not PART_NAME.match(obj["part"]):
            problems.append(f"{where}part {obj['part']!r} is not like part-00000.parquet")
        for field in ("sha256", "plaintext_sha256"):
            if not _SHA256.match(obj[field]):
                problems.append(f"{where}{field} is not a lowercase hex SHA-256")
        if min(obj["size"], obj["plaintext_size"], obj["rows"]) < 0:
            problems.append(f"{where}size, plaintext_size and rows must not be negative")
    if problems:
        return problems
    for field in ("key", "part"):
        if len({o[field] for o in objects}) != len(objects):
            problems.append(f"objects list the same {field} twice")
    total = sum(o["rows"] for o in objects)
    if total != rows_out:
        problems.append(f"objects hold {total} rows but rows_out is {rows_out}")
    return problems


def _field_problems(document: Any, fields: dict, where: str) -> list[str]:
    if not isinstance(document, dict):
        return [f"{where.rstrip('.') or 'manifest'} must be an object"]
    problems = []
    for name, kind in fields.items():
        if name not in document:
            problems.append(f"missing field {where}{name}")
        elif not isinstance(document[name], kind) or isinstance(document[name], bool):
            problems.append(f"field {where}{name} must be {kind.__name__}")
    return problems
