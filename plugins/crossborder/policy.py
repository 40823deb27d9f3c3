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

# Units generalize_time may floor to, as (Arrow temporal unit, multiple).
TIME_UNITS = {
    "1min": ("minute", 1),
    "5min": ("minute", 5),
    "15min": ("minute", 15),
    "30min": ("minute", 30),
    "1h": ("hour", 1),
    "1d": ("day", 1),
}
# Rows in k-anonymity groups smaller than k: removed, or the partition goes to CAC review.
SMALL_GROUP_ACTIONS = ("suppress", "review")
DEFAULT_K = 5


def _options(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    options = {"type": "object", "additionalProperties": False, "properties": properties}
    return {
        "required": ["options"] if required else [],
        "properties": {"options": {**options, "required": required}},
    }


def _when(transform: str, then: dict[str, Any]) -> dict[str, Any]:
    return {"if": {"properties": {"transform": {"const": transform}}}, "then": then}


# Each transform's options, checked by the schema so a typo is a clear policy error.
_COLUMN: dict[str, Any] = {
    "type": "object",
    "required": ["class", "transform"],
    "additionalProperties": False,
    "properties": {
        "class": {"enum": list(DATA_CLASSES)},
        "transform": {"enum": list(TRANSFORMS)},
        "options": {"type": "object"},
        "note": {"type": "string"},
    },
    "allOf": [
        _when("keep", _options([], {})),
        _when("drop", _options([], {})),
        _when("scrub_text", _options([], {})),
        _when("pseudonymize", _options([], {"namespace": {"type": "string", "minLength": 1}})),
        _when("generalize_time", _options(["unit"], {"unit": {"enum": list(TIME_UNITS)}})),
        _when(
            "generalize_location",
            _options(
                ["grid_deg", "axis"],
                {
                    "grid_deg": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    "axis": {"enum": ["lat", "lon"]},
                },
            ),
        ),
        _when("bucket", _options(["width"], {"width": {"type": "number", "exclusiveMinimum": 0}})),
    ],
}

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
        "columns": {"type": "object", "minProperties": 1, "additionalProperties": _COLUMN},
        "sensitive_areas": {
            "type": "object",
            "required": ["file"],
            "additionalProperties": False,
            "properties": {"file": {"type": "string", "minLength": 1}},
        },
        "anonymity": {
            "type": "object",
            "required": ["quasi_identifiers"],
            "additionalProperties": False,
            "properties": {
                "quasi_identifiers": {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {"type": "string"},
                },
                "subject": {"type": "string"},
                "k": {"type": "integer", "minimum": 2},
                "on_small_groups": {"enum": list(SMALL_GROUP_ACTIONS)},
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
class Anonymity:
    """k-anonymity over the quasi-identifiers; k counts distinct subjects when one is named."""

    quasi_identifiers: tuple[str, ...]
    subject: str | None
    k: int = DEFAULT_K
    on_small_groups: str = "suppress"


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
    sensitive_areas: Path | None = None  # no exported grid cell may overlap these areas
    sensitive_areas_sha256: str | None = None  # of the file as loaded (part of the version)
    anonymity: Anonymity | None = None

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @property
    def exported_columns(self) -> list[str]:
        """Columns that leave China, in policy order (everything else is dropped)."""
        return [c.name for c in self.columns if c.transform != "drop"]

    def transforms(self) -> dict[str, dict[str, Any]]:
        """Evidence for the manifest: each column's class, transform and options."""
        return {
            c.name: {"class": c.data_class, "transform": c.transform, "options": c.options}
            for c in self.columns
        }

    def column(self, name: str) -> ColumnRule:
        return next(c for c in self.columns if c.name == name)

    def location_pair(self) -> tuple[ColumnRule, ColumnRule] | None:
        """The (latitude, longitude) columns generalize_location works on, if any."""
        located = {
            c.options["axis"]: c for c in self.columns if c.transform == "generalize_location"
        }
        return (located["lat"], located["lon"]) if located else None


def policies_dir() -> Path:
    return Path(os.environ.get("CROSSBORDER_POLICIES_DIR", REPO_ROOT / "policies"))


def policy_files(directory: Path | None = None) -> list[Path]:
    return sorted((directory or policies_dir()).glob("*.yaml"))


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '6h', '2d' → timedelta; ValueError otherwise."""
    if not _DURATION.match(str(text)):
        raise ValueError(f"duration {text!r} is not a number followed by s, m, h or d")
    return timedelta(**{_DURATION_UNITS[text[-1]]: int(text[:-1])})


def policy_version(data: bytes, sensitive_areas: bytes | None = None) -> str:
    """SHA-256 of the policy file, and of the sensitive-areas file it names, if any."""
    digest = hashlib.sha256(data)
    if sensitive_areas is not None:
        digest.update(b"\0" + hashlib.sha256(sensitive_areas).digest())
    return "sha256:" + digest.hexdigest()


def sensitive_areas_bytes(policy: Policy) -> bytes:
    """The policy's sensitive-areas file, exactly as it was when the policy was loaded."""
    assert policy.sensitive_areas is not None
    data = policy.sensitive_areas.read_bytes()
    if hashlib.sha256(data).hexdigest() != policy.sensitive_areas_sha256:
        raise PolicyInvalid(
            f"sensitive_areas file {policy.sensitive_areas} changed since the policy was loaded",
            dataset=policy.dataset,
            file=str(policy.sensitive_areas),
        )
    return data


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
    areas_path = _sensitive_areas(raw.get("sensitive_areas"), path.parent)
    areas = areas_path.read_bytes() if areas_path and areas_path.is_file() else None
    policy = _build(raw, path, policy_version(data, areas), areas)
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


def _build(raw: dict[str, Any], path: Path, version: str, areas: bytes | None) -> Policy:
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
        sensitive_areas=_sensitive_areas(raw.get("sensitive_areas"), path.parent),
        sensitive_areas_sha256=hashlib.sha256(areas).hexdigest() if areas is not None else None,
        anonymity=_anonymity(raw.get("anonymity")),
    )


def _sensitive_areas(raw: dict[str, Any] | None, folder: Path) -> Path | None:
    if raw is None:
        return None
    file = Path(raw["file"])
    return file if file.is_absolute() else folder / file


def _anonymity(raw: dict[str, Any] | None) -> Anonymity | None:
    if raw is None:
        return None
    return Anonymity(
        quasi_identifiers=tuple(raw["quasi_identifiers"]),
        subject=raw.get("subject"),
        k=raw.get("k", DEFAULT_K),
        on_small_groups=raw.get("on_small_groups", "suppress"),
    )


# What may happen to a column of each class before it leaves (drop is always allowed).
# Important data may leave unchanged, but only through CAC review (see classify).
ALLOWED_TRANSFORMS = {
    "none": set(TRANSFORMS),
    "personal": {
        "drop",
        "pseudonymize",
        "generalize_time",
        "generalize_location",
        "scrub_text",
        "bucket",
    },
    "sensitive_personal": {"drop", "generalize_location", "generalize_time"},
    "important": set(TRANSFORMS),
}


def _check_active_rules(policy: Policy) -> None:
    """Rules an active policy must meet before any of its data may leave."""
    problems = [
        f"column {col.name}: class {col.data_class!r} may not be exported with "
        f"{col.transform!r} (allowed: {', '.join(sorted(ALLOWED_TRANSFORMS[col.data_class]))})"
        for col in policy.columns
        if col.transform not in ALLOWED_TRANSFORMS[col.data_class]
    ]
    if not policy.exported_columns:
        problems.append("no column would be exported")
    problems += _location_problems(policy) + _anonymity_problems(policy)
    if problems:
        raise PolicyInvalid("; ".join(problems), dataset=policy.dataset, file=str(policy.path))


def _location_problems(policy: Policy) -> list[str]:
    located = [c for c in policy.columns if c.transform == "generalize_location"]
    axes = sorted(c.options["axis"] for c in located)
    problems = []
    if located and axes != ["lat", "lon"]:
        problems.append(
            f"generalize_location needs exactly one lat and one lon column, found {axes}"
        )
    elif located and located[0].options["grid_deg"] != located[1].options["grid_deg"]:
        problems.append("generalize_location: lat and lon must use the same grid_deg")
    if located and policy.sensitive_areas is None:
        problems.append("generalize_location needs a sensitive_areas file")
    if policy.sensitive_areas:
        problems += _areas_problems(policy)
    return problems


def _areas_problems(policy: Policy) -> list[str]:
    """An empty or unreadable areas file would silently protect nothing: refuse it."""
    from crossborder.geo import parse_sensitive_areas

    assert policy.sensitive_areas is not None
    if policy.sensitive_areas_sha256 is None:
        return [f"sensitive_areas file {policy.sensitive_areas} does not exist"]
    try:
        areas = parse_sensitive_areas(sensitive_areas_bytes(policy), str(policy.sensitive_areas))
    except (ValueError, KeyError, TypeError) as exc:
        return [f"sensitive_areas file cannot be used: {exc}"]
    return [] if areas else [f"sensitive_areas file {policy.sensitive_areas} holds no polygon"]


def _anonymity_problems(policy: Policy) -> list[str]:
    personal = [c for c in policy.columns if c.data_class != "none" and c.transform != "drop"]
    rules = policy.anonymity
    if rules is None:
        return ["personal data is exported without an anonymity section"] if personal else []
    exported = set(policy.exported_columns)
    problems = [
        f"anonymity: quasi-identifier {name} is not an exported column"
        for name in rules.quasi_identifiers
        if name not in exported
    ]
    if rules.subject and (
        rules.subject not in exported or policy.column(rules.subject).transform != "pseudonymize"
    ):
        problems.append(
            f"anonymity: subject {rules.subject} must be an exported pseudonymized column"
        )
    return problems
