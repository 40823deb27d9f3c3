"""The export rules (``rules/export_rules.yaml``): scenarios, categories, thresholds.

The rules file is the data form of the rule model in RULES.md, so compliance can change
it without code. It is schema-checked on load; its version is the SHA-256 of the file,
written into every route decision. A reason cites a rule by its path in the file
(``thresholds.personal.important_data``); ``Rules.has_rule`` says whether a path exists.

Rules may only send data to ``cac_review`` or ``blocked``: the schema refuses a rule
that would clear anything, so a bad edit can make the pipeline stricter, never laxer.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crossborder.errors import RulesInvalid
from crossborder.policy import REPO_ROOT, TIME_UNITS, ColumnRule

SUBJECT_CLASSES = ("personal", "sensitive_personal")
CATEGORY_CLASSES = {"general": None, "important": "cac_review", "never": "blocked"}
GATES = ("policy_status", "quality", "staged", "policy_version", "verification", "small_groups")
_HELD = {"enum": ["cac_review", "blocked"]}  # the only routes a rule may give


def _strict(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "additionalProperties": False,
        "properties": properties,
    }


def _gate(route: str) -> dict[str, Any]:
    return _strict(["route", "text"], {"route": {"const": route}, "text": {"type": "string"}})


_TEXT = {"type": "string", "minLength": 1}
_THRESHOLD = {
    "type": "object",
    "required": ["route"],
    "additionalProperties": False,
    "properties": {
        "more_than": {"type": "integer", "minimum": 0},
        "at_least": {"type": "integer", "minimum": 1},
        "route": _HELD,
        "unless_filed": {"type": "boolean"},
    },
    "oneOf": [{"required": ["more_than"]}, {"required": ["at_least"]}],
}
_THRESHOLDS = {"type": "object", "minProperties": 1, "additionalProperties": _THRESHOLD}

RULES_SCHEMA: dict[str, Any] = _strict(
    [
        "rules_format",
        "gates",
        "no_legal_route",
        "scenarios",
        "categories",
        "column_classes",
        "counting",
        "thresholds",
        "standard_contract_filings",
    ],
    {
        "rules_format": {"const": 1},
        "company": {"type": "string"},
        "gates": _strict(
            list(GATES),
            {g: _gate("cac_review" if g == "small_groups" else "blocked") for g in GATES},
        ),
        "no_legal_route": _strict(["scenario", "route"], {"scenario": _TEXT, "route": _HELD}),
        "scenarios": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": _strict(
                ["title", "filing", "categories"],
                {
                    "title": _TEXT,
                    "filing": _strict(
                        ["reference"],
                        {
                            "reference": {"type": ["string", "null"], "minLength": 1},
                            "demo": {"type": "boolean"},
                        },
                    ),
                    "categories": {"type": "array", "uniqueItems": True, "items": _TEXT},
                },
            ),
        },
        "categories": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": _strict(
                ["class", "title"], {"class": {"enum": list(CATEGORY_CLASSES)}, "title": _TEXT}
            ),
        },
        "column_classes": _strict(
            ["none", "personal", "sensitive_personal", "important"],
            {
                "none": _strict(["text"], {"text": _TEXT}),
                "personal": _strict(["text"], {"text": _TEXT}),
                "sensitive_personal": _strict(
                    ["text", "neutralised_by"],
                    {
                        "text": _TEXT,
                        "neutralised_by": _strict(
                            [],
                            {
                                "generalize_location": _strict(
                                    ["min_grid_deg"],
                                    {"min_grid_deg": {"type": "number", "exclusiveMinimum": 0}},
                                ),
                                "generalize_time": _strict(
                                    ["units"],
                                    {
                                        "units": {
                                            "type": "array",
                                            "minItems": 1,
                                            "items": {"enum": list(TIME_UNITS)},
                                        }
                                    },
                                ),
                            },
                        ),
                    },
                ),
                "important": _strict(["route", "text"], {"route": _HELD, "text": _TEXT}),
            },
        ),
        "counting": _strict(
            ["timezone", "uncountable"],
            {
                "timezone": {"const": "Asia/Shanghai"},
                "subject": {"type": "string"},
                "uncountable": _strict(["route"], {"route": _HELD}),
            },
        ),
        "thresholds": _strict(
            list(SUBJECT_CLASSES), {name: _THRESHOLDS for name in SUBJECT_CLASSES}
        ),
        "standard_contract_filings": {"type": "object", "additionalProperties": _TEXT},
    },
)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    filing: str | None  # the Lingang platform filing reference; None clears nothing
    filing_is_demo: bool
    categories: tuple[str, ...]


@dataclass(frozen=True)
class Category:
    name: str
    data_class: str  # general, important or never
    title: str

    @property
    def route(self) -> str | None:
        """cac_review or blocked; None for general data (it may leave if listed)."""
        return CATEGORY_CLASSES[self.data_class]


@dataclass(frozen=True)
class Threshold:
    rule: str  # its path in the file, e.g. thresholds.personal.important_data
    subject_class: str
    limit: int
    inclusive: bool  # "at least" (>=) rather than "more than" (>)
    route: str
    unless_filed: bool = False  # a standard-contract filing for the dataset lifts it

    def crossed(self, total: int) -> bool:
        return total >= self.limit if self.inclusive else total > self.limit

    def describe(self) -> str:
        return f"{'at least' if self.inclusive else 'more than'} {self.limit:,}"


@dataclass(frozen=True)
class Rules:
    path: Path
    version: str  # sha256:<hex> of the file
    raw: dict[str, Any]
    timezone: str
    no_legal_route: str  # the scenario name meaning "no legal route abroad"
    scenarios: dict[str, Scenario]
    categories: dict[str, Category]
    thresholds: tuple[Threshold, ...]
    standard_contract_filings: dict[str, str]

    def has_rule(self, rule: str) -> bool:
        """Is ``rule`` (a dotted path such as ``categories.camera_media``) in the file?"""
        node: Any = self.raw
        for part in rule.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    def route_of(self, rule: str) -> str:
        """The route a gate or section of the file names (``gates.quality`` → blocked)."""
        node: Any = self.raw
        for part in rule.split("."):
            node = node[part]
        return node["route"]

    def neutralises(self, column: ColumnRule) -> bool:
        """Does the column's transform leave sensitive personal data no longer sensitive?"""
        if column.transform == "drop":
            return True
        found = self.raw["column_classes"]["sensitive_personal"]["neutralised_by"]
        needs = found.get(column.transform)
        if needs is None:
            return False
        if column.transform == "generalize_location":
            return column.options["grid_deg"] >= needs["min_grid_deg"]
        return column.options["unit"] in needs["units"]


def rules_file() -> Path:
    return Path(os.environ.get("CROSSBORDER_RULES_FILE", REPO_ROOT / "rules" / "export_rules.yaml"))


def rules_version(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def load_rules(path: Path | None = None) -> Rules:
    """Load and check the rules file; RulesInvalid names the file and what is wrong."""
    path = path or rules_file()
    try:
        data = path.read_bytes()
        raw = yaml.safe_load(data)
    except OSError as exc:
        raise RulesInvalid(f"cannot read the rules file: {exc}", file=str(path)) from None
    except yaml.YAMLError as exc:
        raise RulesInvalid(f"not valid YAML: {exc}", file=str(path)) from None
    _check_schema(raw, path)
    rules = _build(raw, path, rules_version(data))
    problems = _consistency_problems(rules)
    if problems:
        raise RulesInvalid("; ".join(problems), file=str(path))
    return rules


def _check_schema(raw: Any, path: Path) -> None:
    import jsonschema

    errors = sorted(
        jsonschema.Draft202012Validator(RULES_SCHEMA).iter_errors(raw), key=lambda e: e.path
    )
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]
        raise RulesInvalid("does not match the rules schema: " + "; ".join(lines), file=str(path))


def _build(raw: dict[str, Any], path: Path, version: str) -> Rules:
    return Rules(
        path=path,
        version=version,
        raw=raw,
        timezone=raw["counting"]["timezone"],
        no_legal_route=raw["no_legal_route"]["scenario"],
        scenarios={
            name: Scenario(
                name,
                spec["title"],
                spec["filing"]["reference"],
                spec["filing"].get("demo", False),
                tuple(spec["categories"]),
            )
            for name, spec in raw["scenarios"].items()
        },
        categories={
            name: Category(name, spec["class"], spec["title"])
            for name, spec in raw["categories"].items()
        },
        thresholds=tuple(
            Threshold(
                rule=f"thresholds.{subject_class}.{name}",
                subject_class=subject_class,
                limit=spec.get("at_least", spec.get("more_than")),
                inclusive="at_least" in spec,
                route=spec["route"],
                unless_filed=spec.get("unless_filed", False),
            )
            for subject_class, entries in raw["thresholds"].items()
            for name, spec in entries.items()
        ),
        standard_contract_filings=dict(raw["standard_contract_filings"]),
    )


def _consistency_problems(rules: Rules) -> list[str]:
    """What the schema cannot see: names that must refer to each other."""
    problems = []
    for scenario in rules.scenarios.values():
        for name in scenario.categories:
            category = rules.categories.get(name)
            if category is None:
                problems.append(f"scenarios/{scenario.name}: unknown category {name!r}")
            elif category.data_class != "general":
                problems.append(
                    f"scenarios/{scenario.name}: category {name!r} is {category.data_class} "
                    "data and cannot be on the general data list"
                )
    if rules.no_legal_route in rules.scenarios:
        problems.append(f"no_legal_route: {rules.no_legal_route!r} is also a listed scenario")
    return problems
