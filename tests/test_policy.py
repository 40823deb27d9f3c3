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


def test_every_dataset_but_owner_identity_is_active():
    active = [d for d in SHIPPED if load_policy(d).is_active]
    assert "owner_profiles" not in active and len(active) == len(SHIPPED) - 1


def test_location_and_anonymity_settings_are_read(tmp_path):
    policy = load_policy("vehicle_telemetry")
    lat, lon = policy.location_pair()
    assert (lat.name, lon.name) == ("lat_gcj02", "lon_gcj02")
    assert policy.sensitive_areas.name == "sensitive_areas.geojson"
    assert policy.sensitive_areas.is_file()
    assert policy.anonymity.subject == "vin" and policy.anonymity.k == 5
    assert policy.transforms()["vin"] == {
        "class": "personal",
        "transform": "pseudonymize",
        "options": {"namespace": "vin"},
    }


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
            "class 'personal' may not be exported with 'keep'",
        ),
        (
            (
                "secret: {class: personal, transform: drop}",
                "secret: {class: sensitive_personal, transform: pseudonymize}",
            ),
            "class 'sensitive_personal' may not be exported with 'pseudonymize'",
        ),
        (
            (
                "secret: {class: personal, transform: drop}",
                "secret: {class: personal, transform: pseudonymize}",
            ),
            "personal data is exported without an anonymity section",
        ),
        (
            (
                "secret: {class: personal, transform: drop}",
                "secret: {class: none, transform: generalize_time}",
            ),
            "columns/secret: 'options' is a required property",
        ),
        (
            (
                "secret: {class: personal, transform: drop}",
                "secret: {class: none, transform: generalize_time, options: {unit: 2h}}",
            ),
            "columns/secret/options/unit",
        ),
        (
            (
                "secret: {class: personal, transform: drop}",
                "secret: {class: none, transform: bucket, options: {width: 0}}",
            ),
            "columns/secret/options/width",
        ),
        (
            (
                "secret: {class: personal, transform: drop}",
                "secret: {class: none, transform: pseudonymize, options: {salt: x}}",
            ),
            "columns/secret/options",
        ),
        (
            (
                "secret: {class: personal, transform: drop}",
                "lat: {class: sensitive_personal, transform: generalize_location, "
                "options: {grid_deg: 0.01, axis: lat}}",
            ),
            "generalize_location needs exactly one lat and one lon column",
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


ANONYMIZED = VALID.replace(
    "secret: {class: personal, transform: drop}",
    """vin: {class: personal, transform: pseudonymize}
  when: {class: personal, transform: generalize_time, options: {unit: 1h}}
anonymity: {quasi_identifiers: [when], subject: vin}""",
)


def test_anonymity_defaults_to_k_5_and_suppression(tmp_path):
    _write(tmp_path, "sample", ANONYMIZED)
    rules = load_policy("sample", tmp_path).anonymity
    assert (rules.k, rules.on_small_groups, rules.quasi_identifiers) == (5, "suppress", ("when",))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("quasi_identifiers: [when]", "quasi_identifiers: [gone]"), "quasi-identifier gone"),
        (("subject: vin", "subject: when"), "subject when must be an exported pseudonymized"),
        (("subject: vin}", "subject: vin, k: 1}"), "anonymity/k"),
        (("subject: vin}", "subject: vin, on_small_groups: ignore}"), "on_small_groups"),
    ],
)
def test_bad_anonymity_section_is_rejected(tmp_path, change, message):
    _write(tmp_path, "sample", ANONYMIZED.replace(*change))
    with pytest.raises(PolicyInvalid, match=message):
        load_policy("sample", tmp_path)


def test_missing_sensitive_areas_file_is_rejected(tmp_path):
    text = VALID.replace(
        "secret: {class: personal, transform: drop}",
        """lat: {class: none, transform: generalize_location, options: {grid_deg: 0.1, axis: lat}}
  lon: {class: none, transform: generalize_location, options: {grid_deg: 0.1, axis: lon}}
sensitive_areas: {file: nowhere.geojson}""",
    )
    _write(tmp_path, "sample", text)
    with pytest.raises(PolicyInvalid, match=r"nowhere\.geojson does not exist"):
        load_policy("sample", tmp_path)


AREAS_POLICY = VALID.replace(
    "secret: {class: personal, transform: drop}",
    """lat: {class: none, transform: generalize_location, options: {grid_deg: 0.1, axis: lat}}
  lon: {class: none, transform: generalize_location, options: {grid_deg: 0.1, axis: lon}}
sensitive_areas: {file: areas.geojson}""",
)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"type": "FeatureCollection", "features": []}', "holds no polygon"),
        ('{"type": "Feature"}', "not a GeoJSON FeatureCollection"),
        ("not json", "cannot be used"),
    ],
)
def test_empty_or_broken_sensitive_areas_file_is_rejected(tmp_path, content, message):
    _write(tmp_path, "sample", AREAS_POLICY)
    (tmp_path / "areas.geojson").write_text(content)
    with pytest.raises(PolicyInvalid, match=message):
        load_policy("sample", tmp_path)


def test_policy_version_covers_the_sensitive_areas_file(tmp_path):
    from crossborder.geo import DEFAULT_SENSITIVE_AREAS

    _write(tmp_path, "sample", AREAS_POLICY)
    areas = tmp_path / "areas.geojson"
    areas.write_bytes(DEFAULT_SENSITIVE_AREAS.read_bytes())
    before = load_policy("sample", tmp_path)
    areas.write_bytes(DEFAULT_SENSITIVE_AREAS.read_bytes() + b"\n")
    after = load_policy("sample", tmp_path)
    assert before.version != after.version
    assert before.sensitive_areas_sha256 != after.sensitive_areas_sha256
