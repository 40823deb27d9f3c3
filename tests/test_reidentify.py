"""Re-identification stays in China: the key maps a pseudonym back, and every lookup is audited."""

from __future__ import annotations

import secrets
from datetime import date

import pyarrow.parquet as pq
import pytest

from crossborder import ledger, reidentify, synthetic
from crossborder.anonymize import pseudonym

DAY = date(2026, 11, 23)


@pytest.fixture
def source(tmp_path):
    synthetic.generate_partition(tmp_path / "src", "diagnostics", DAY, rows=500, seed=3)
    return tmp_path / "src"


def test_pseudonym_maps_back_to_its_vin_with_the_key_and_the_lookup_is_audited(
    source, tmp_path, capsys
):
    key = secrets.token_hex(32).encode()
    key_file = tmp_path / "pseudonymization.key"
    key_file.write_bytes(key + b"\n")
    vin = pq.read_table(source / "diagnostics", columns=["vin"])["vin"][0].as_py()
    alias = pseudonym(key, "vin", vin)
    unknown = pseudonym(key, "vin", "LSGNOTINTHESTORE")
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    argv = [alias, unknown, "--source", str(source), "--dataset", "diagnostics"]
    argv += ["--from", "2026-11-22", "--to", "2026-11-23", "--case", "INV-2026-042"]
    argv += ["--requested-by", "alice", "--ledger-url", ledger_url, "--key-file", str(key_file)]

    assert reidentify.main(argv) == 1  # one of the two was not found
    out = capsys.readouterr().out
    assert f"{alias}\t{vin}" in out and f"{unknown}\tNOT FOUND" in out
    (event,) = ledger.list_events(ledger.connect(ledger_url), "diagnostics", "2026-11-22")
    assert event["kind"] == "reidentification"
    assert event["detail"]["case"] == "INV-2026-042"
    assert event["detail"]["requested_by"] == "alice"
    assert event["detail"]["found"] == 1
    assert vin not in str(event["detail"]) and key.decode() not in str(event["detail"])


def test_without_the_key_nothing_maps_back(source):
    vin = pq.read_table(source / "diagnostics", columns=["vin"])["vin"][0].as_py()
    alias = pseudonym(b"the real key", "vin", vin)
    assert reidentify.reidentify([alias], b"a guessed key", source, "diagnostics", [str(DAY)]) == {}
    assert reidentify.reidentify([alias], b"the real key", source, "diagnostics", [str(DAY)]) == {
        alias: vin
    }


def test_no_export_dag_imports_the_reidentification_helper():
    from pathlib import Path

    package = Path(reidentify.__file__).parent
    users = [
        p.name
        for p in [*package.glob("*.py"), *(package.parents[1] / "dags").glob("*.py")]
        if "reidentify" in p.read_text(encoding="utf-8") and p.name != "reidentify.py"
    ]
    assert users == []


def test_day_range_must_be_in_order():
    with pytest.raises(ValueError, match="before"):
        reidentify.days_between("2026-11-23", "2026-11-01")
