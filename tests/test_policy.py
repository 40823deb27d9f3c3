"""Policies: every shipped policy loads; a bad policy fails with a clear, located error."""

from pathlib import Path

import pytest

from crossborder.errors import PolicyInvalid
from crossborder.policy import load_policy, parse_duration, policy_files, policy_version

SHIPPED = [p.stem for p in policy_files()]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


VALID = """
dataset: sample
status: active
description: test data
schedule: {export_time: "02:00", wait_timeout: 30m}
legal: {scenario: production_and_manufacturing}
columns:
  id: {class: none, transform: keep}
  secret: {class: personal, transform: drop}
"""


def test_all_six_datasets_have_a_policy():
    assert (
        sorted(
            [
                "adas_events",
                "charging_sessions",
                "diagnostics",
                "owner_profiles",
                "production_quality",
                "vehicle_telemetry",
            ]
        )
        == SHIPPED
    )


@pytest.mark.parametrize("dataset", SHIPPED)
def test_shipped_policy_loads(dataset):
    policy = load_policy(dataset)
    assert policy.dataset == dataset
    assert policy.version.startswith("sha256:")


def test_only_production_quality_is_active_until_anonymization_exists():
    assert [d for d in SHIPPED if load_policy(d).is_active] == ["production_quality"]


def test_missing_columns_are_never_exported(tmp_path):
    _write(tmp_path, "sample", VALID)
    policy = load_policy("sample", tmp_path)
    assert policy.exported_columns == ["id"]
    assert policy.wait_timeout == parse_duration("30m")


def test_version_changes_with_the_file(tmp_path):
    path = _write(tmp_path, "sample", VALID)
    before = load_policy("sample", tmp_path).version
    path.write_text(VALID.replace("test data", "other"), encoding="utf-8")
    assert load_policy("sample", tmp_path).version != before
    assert before == policy_version(VALID.encode())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("class: none, transform: keep", "class: secret, transform: keep"), "columns/id/class"),
        (("transform: keep", "transform: shred"), "columns/id/transform"),
        (("status: active", "status: maybe"), "status"),
        (("dataset: sample", "dataset: other"), "expected 'sample'"),
        (
            (
                "secret: {class: personal, transform: drop}",
                "secret: {class: personal, transform: keep}",
            ),
            "class 'personal' data cannot be exported unchanged",
        ),
        (
            (
                "id: {class: none, transform: keep}",
                "id: {class: personal, transform: pseudonymize}",
            ),
            "transform 'pseudonymize' is not available yet",
        ),
    ],
)
def test_bad_policy_is_rejected_with_the_reason(tmp_path, change, message):
    path = _write(tmp_path, "sample", VALID.replace(*change))
    with pytest.raises(PolicyInvalid) as err:
        load_policy("sample", tmp_path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert "dataset sample" in str(err.value)


def test_unparsable_yaml_names_the_file(tmp_path):
    _write(tmp_path, "sample", "dataset: [unclosed")
    with pytest.raises(PolicyInvalid, match="not valid YAML"):
        load_policy("sample", tmp_path)


def test_missing_policy_is_an_error(tmp_path):
    with pytest.raises(PolicyInvalid, match="no policy file"):
        load_policy("nothing_here", tmp_path)
