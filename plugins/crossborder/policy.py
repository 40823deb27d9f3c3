"""Dataset policies: one YAML file per dataset in ``policies/``.

A policy names every column that may leave China, its data class and its transform.
A column the policy does not name is never exported (allow-list). The policy's version
is the SHA-256 of its file, so the manifest and the ledger say exactly which rules held.

Only ``status: active`` policies export anything; a ``draft`` policy fails closed
(the partition is routed ``blocked`` with the reason "no complete policy yet").
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from crossborder.errors import PolicyInvalid

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_CLASSES = ("none", "personal", "sensitive_personal", "important")
# Every transform a policy may name; crossborder.anonymize.TRANSFORMS holds those that run.
TRANSFORMS = (
    "keep",
    "drop",
    "pseudonymize",
    "generalize_location",
    "generalize_time",
    "scrub_text",
    "bucket",
)
# expected_by (when the partition should be complete) defaults to the export time.
DEFAULT_SCHEDULE = {"export_time": "02:00", "wait_timeout": "6h", "poke_interval": "5m"}
_EXPORT_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_DURATION = re.compile(r"^[0-9]+[smhd]$")

_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

POLICY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["dataset", "status", "description", "schedule", "legal", "columns"],
    "additionalProperties": False,
    "properties": {
        "dataset": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "status": {"enum": ["active", "draft"]},
        "description": {"type": "string", "minLength": 1},
        "owner": {"type": "string"},
        "schedule": {
            "type": "object",
            "additionalProperties": False,
            "required": ["export_time"],
            "properties": {
                "export_time": {"type": "string", "pattern": _EXPORT_TIME.pattern},
                "expected_by": {"type": "string", "pattern": _EXPORT_TIME.pattern},
                "wait_timeout": {"type": "string", "pattern": _DURATION.pattern},
                "poke_interval": {"type": "string", "pattern": _DURATION.pattern},
            },
        },
        "legal": {
            "type": "object",
            "required": ["scenario"],
            "properties": {
                "scenario": {"type": "string"},
                "categories": {"type": "array", "items": {"type": "string"}},
                "notes": {"type": "string"},
            },
        },
        "columns": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "required": ["class", "transform"],
                "additionalProperties": False,
                "properties": {
                    "class": {"enum": list(DATA_CLASSES)},
                    "transform": {"enum": list(TRANSFORMS)},
                    "options": {"type": "object"},
                    "note": {"type": "string"},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class ColumnRule:
    name: str
    data_class: str
    transform: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    dataset: str
    status: str
    description: str
    version: str
    path: Path
    export_time: str
    wait_timeout: timedelta
    poke_interval: timedelta
    scenario: str
    categories: tuple[str, ...]
    columns: tuple[ColumnRule, ...]

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @property
    def exported_columns(self) -> list[str]:
        """Columns that leave China, in policy order (everything else is dropped)."""
        return [c.name for c in self.columns if c.transform != "drop"]

    def transforms(self) -> dict[str, str]:
        return {c.name: c.transform for c in self.columns}


def policies_dir() -> Path:
    return Path(os.environ.get("CROSSBORDER_POLICIES_DIR", REPO_ROOT / "policies"))


def policy_files(directory: Path | None = None) -> list[Path]:
    return sorted((directory or policies_dir()).glob("*.yaml"))


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '6h', '2d' → timedelta; ValueError otherwise."""
    if not _DURATION.match(str(text)):
        raise ValueError(f"duration {text!r} is not a number followed by s, m, h or d")
    return timedelta(**{_DURATION_UNITS[text[-1]]: int(text[:-1])})


def policy_version(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_schedule(path: Path) -> dict[str, Any]:
    """The few fields a DAG needs at parse time, without full validation (kept cheap).

    Never raises: one broken policy must not take the other datasets' DAGs down with it.
    A broken file gives a DAG with the default schedule and status ``invalid``, whose
    runs fail closed when the policy is loaded for real.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        schedule = {**DEFAULT_SCHEDULE, **(raw.get("schedule") or {})}
        schedule.setdefault("expected_by", schedule["export_time"])
        for name in ("export_time", "expected_by"):
            if not _EXPORT_TIME.match(schedule[name]):
                raise ValueError(f"{name} {schedule[name]!r} is not HH:MM")
        parse_duration(schedule["wait_timeout"]), parse_duration(schedule["poke_interval"])
        status, description = raw.get("status", "draft"), raw.get("description", "")
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError, KeyError) as exc:
        schedule = {**DEFAULT_SCHEDULE, "expected_by": DEFAULT_SCHEDULE["export_time"]}
        status = "invalid"
        description = f"The policy file cannot be read ({exc}); every run fails until it is fixed."
    return {"dataset": path.stem, "description": description, "status": status, **schedule}


def load_policy(dataset: str, directory: Path | None = None) -> Policy:
    """Load and fully validate ``policies/<dataset>.yaml``; raise PolicyInvalid if it is wrong."""
    path = (directory or policies_dir()) / f"{dataset}.yaml"
    try:
        data = path.read_bytes()
        raw = yaml.safe_load(data)
    except FileNotFoundError:
        raise PolicyInvalid("no policy file", dataset=dataset, file=str(path)) from None
    except yaml.YAMLError as exc:
        raise PolicyInvalid(f"not valid YAML: {exc}", dataset=dataset, file=str(path)) from None
    _check_schema(raw, dataset, path)
    if raw["dataset"] != dataset:
        raise PolicyInvalid(
            f"policy names dataset {raw['dataset']!r}, expected {dataset!r} from its file name",
            dataset=dataset,
            file=str(path),
        )
    policy = _build(raw, path, policy_version(data))
    if policy.is_active:
        _check_active_rules(policy)
    return policy


def _check_schema(raw: Any, dataset: str, path: Path) -> None:
    import jsonschema  # heavy import: only when a task validates a policy

    errors = sorted(
        jsonschema.Draft202012Validator(POLICY_SCHEMA).iter_errors(raw), key=lambda e: e.path
    )
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]
        raise PolicyInvalid(
            "does not match the policy schema: " + "; ".join(lines), dataset=dataset, file=str(path)
        )


def _build(raw: dict[str, Any], path: Path, version: str) -> Policy:
    schedule = raw["schedule"]
    return Policy(
        dataset=raw["dataset"],
        status=raw["status"],
        description=raw["description"].strip(),
        version=version,
        path=path,
        export_time=schedule["export_time"],
        wait_timeout=parse_duration(schedule.get("wait_timeout", "6h")),
        poke_interval=parse_duration(schedule.get("poke_interval", "5m")),
        scenario=raw["legal"]["scenario"],
        categories=tuple(raw["legal"].get("categories", ())),
        columns=tuple(
            ColumnRule(name, spec["class"], spec["transform"], spec.get("options", {}))
            for name, spec in raw["columns"].items()
        ),
    )


def _check_active_rules(policy: Policy) -> None:
    """Rules an active policy must meet before any of its data may leave."""
    from crossborder.anonymize import TRANSFORMS

    problems = []
    for col in policy.columns:
        if col.transform != "drop" and col.transform not in TRANSFORMS:
            problems.append(f"column {col.name}: transform {col.transform!r} is not available yet")
        elif col.transform == "keep" and col.data_class != "none":
            problems.append(
                f"column {col.name}: class {col.data_class!r} data cannot be exported unchanged"
            )
    if not policy.exported_columns:
        problems.append("no column would be exported")
    if problems:
        raise PolicyInvalid("; ".join(problems), dataset=policy.dataset, file=str(policy.path))
