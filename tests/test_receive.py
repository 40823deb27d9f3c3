"""The U.S. receiver: verify, decrypt, land, receipt; and refuse anything tampered with."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import DATASET, DAY

from crossborder import crypto, landing, receive
from crossborder.errors import IntegrityMismatch
from crossborder.manifest import build_manifest, canonical_json, manifest_bytes

PREFIX = f"{DATASET}/dt={DAY}/"


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    return tmp_path / "us-lake"


@pytest.fixture
def receive_now(s3_client, us_bucket, lake, keys):
    def run(private_pem: bytes | None = None, signing_public: bytes | None = None):
        return receive.receive_partition(
            s3_client,
            us_bucket,
            DATASET,
            DAY,
            lake,
            private_pem or keys.recipient_private,
            signing_public or keys.signing_public,
            receiver="test-receiver",
        )

    return run


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _put_signed(s3, bucket: str, manifest: dict, signing_private: bytes) -> None:
    """Write a manifest and its signature directly, bypassing publish's own checks."""
    data = manifest_bytes(manifest)
    s3.put_object(
        Bucket=bucket, Key=f"{PREFIX}manifest.json.sig", Body=crypto.sign(data, signing_private)
    )
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}manifest.json", Body=data)


def _assert_refused(s3, bucket, lake, run, match: str, **kwargs) -> IntegrityMismatch:
    with pytest.raises(IntegrityMismatch, match=match) as caught:
        run(**kwargs)
    assert _files(lake) == [], "nothing may land"
    assert landing.read_receipt(s3, bucket, DATASET, DAY) is None, "no receipt"
    assert (caught.value.dataset, caught.value.day) == (DATASET, DAY)
    return caught.value


def test_round_trip_lands_identical_parquet_and_writes_receipt(
    s3_client, us_bucket, lake, export_partition, make_partition, receive_now
):
    files = make_partition(3)
    exported = export_partition(files)
    s3_client.put_object(Bucket=us_bucket, Key="README.txt", Body=b"not a partition")
    assert receive.pending_partitions(s3_client, us_bucket) == [(DATASET, DAY)]

    receipt = receive_now()

    target = lake / DATASET / f"dt={DAY}"
    assert _files(lake) == [target / f.name for f in files]
    for f in files:
        assert (target / f.name).read_bytes() == f.read_bytes()
        assert pq.read_table(target / f.name).equals(pq.read_table(f))
    stored = landing.read_receipt(s3_client, us_bucket, DATASET, DAY)
    assert stored == receipt.to_dict()
    assert stored["manifest_sha256"] == exported.published.sha256
    assert stored["rows"] == exported.manifest["rows_out"] == 50 + 51 + 52
    assert stored["lake_path"] == str(target.resolve())
    assert stored["receiver"] == "test-receiver"
    assert stored["objects"] == exported.manifest["objects"]
    assert receive.pending_partitions(s3_client, us_bucket) == []


def test_receiving_again_changes_nothing(
    s3_client, us_bucket, lake, export_partition, make_partition, receive_now
):
    export_partition(make_partition(2))
    first = receive_now()
    receipt_head = s3_client.head_object(Bucket=us_bucket, Key=f"{PREFIX}receipt.json")
    mtimes = {p: p.stat().st_mtime_ns for p in _files(lake)}

    assert receive_now() == first
    assert (
        s3_client.head_object(Bucket=us_bucket, Key=f"{PREFIX}receipt.json")["ETag"]
        == receipt_head["ETag"]
    )
    assert {p: p.stat().st_mtime_ns for p in _files(lake)} == mtimes


def test_an_unreadable_receipt_is_received_again(
    s3_client, us_bucket, export_partition, make_partition, receive_now
):
    export_partition(make_partition(1))
    s3_client.put_object(Bucket=us_bucket, Key=f"{PREFIX}receipt.json", Body=b"{truncated")
    assert receive.pending_partitions(s3_client, us_bucket) == [(DATASET, DAY)]
    receipt = receive_now()
    assert landing.read_receipt(s3_client, us_bucket, DATASET, DAY) == receipt.to_dict()


def test_odd_manifest_keys_are_skipped_not_fatal(
    s3_client, us_bucket, export_partition, make_partition, caplog
):
    export_partition(make_partition(1))
    odd = ["Archive/dt=2024-01-01/manifest.json", f"{DATASET}/dt=2024-02-30/manifest.json"]
    for key in odd:
        s3_client.put_object(Bucket=us_bucket, Key=key, Body=b"{}")

    with caplog.at_level(logging.WARNING, logger="crossborder.receive"):
        assert receive.pending_partitions(s3_client, us_bucket) == [(DATASET, DAY)]

    logged = " ".join(r.getMessage() for r in caplog.records)
    assert all(key in logged for key in odd)


def test_a_receipt_with_unknown_fields_is_still_read(
    s3_client, us_bucket, export_partition, make_partition, receive_now
):
    """A receipt written by a newer receiver version must not crash this one."""
    export_partition(make_partition(1))
    first = receive_now()
    newer = {**first.to_dict(), "receipt_version": 2, "verified_by": "auditor"}
    s3_client.put_object(Bucket=us_bucket, Key=f"{PREFIX}receipt.json", Body=canonical_json(newer))

    assert receive_now() == first
    assert receive.Receipt.from_dict(newer) == first


def test_a_new_export_replaces_the_landed_partition(
    s3_client, us_bucket, lake, export_partition, make_partition, receive_now
):
    export_partition(make_partition(3, seed=1))
    receive_now()
    newer = make_partition(2, seed=2)
    export_partition(newer)
    assert receive.pending_partitions(s3_client, us_bucket) == [(DATASET, DAY)]

    receive_now()

    target = lake / DATASET / f"dt={DAY}"
    assert _files(lake) == [target / f.name for f in newer]  # part-00002 is gone
    assert all((target / f.name).read_bytes() == f.read_bytes() for f in newer)
    assert [p.name for p in target.parent.iterdir()] == [f"dt={DAY}"]  # no staging leftovers


def test_objects_the_manifest_does_not_list_are_ignored(
    s3_client, us_bucket, lake, export_partition, make_partition, receive_now
):
    export_partition(make_partition(1))
    s3_client.put_object(
        Bucket=us_bucket, Key=f"{PREFIX}part-00009.parquet.encrypted", Body=b"junk"
    )
    receipt = receive_now()
    assert [p.name for p in _files(lake)] == ["part-00000.parquet"]
    assert [o["part"] for o in receipt.objects] == ["part-00000.parquet"]


def test_tampered_ciphertext_is_refused(
    s3_client, us_bucket, lake, export_partition, make_partition, receive_now
):
    exported = export_partition(make_partition(3))
    key = exported.records[1]["key"]
    body = bytearray(s3_client.get_object(Bucket=us_bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3_client.put_object(Bucket=us_bucket, Key=key, Body=bytes(body))

    error = _assert_refused(s3_client, us_bucket, lake, receive_now, "ciphertext is .* SHA-256")
    assert error.file == key
    assert receive.pending_partitions(s3_client, us_bucket) == [(DATASET, DAY)]


def test_missing_object_is_refused(
    s3_client, us_bucket, lake, export_partition, make_partition, receive_now
):
    exported = export_partition(make_partition(2))
    s3_client.delete_object(Bucket=us_bucket, Key=exported.records[0]["key"])
    _assert_refused(s3_client, us_bucket, lake, receive_now, "listed in the manifest is missing")


def test_tampered_manifest_is_refused(
    s3_client, us_bucket, lake, export_partition, make_partition, receive_now
):
    export_partition(make_partition(2))
    data = landing.get_bytes(s3_client, us_bucket, f"{PREFIX}manifest.json")
    edited = data.replace(b'"rows_out": 101', b'"rows_out": 100')
    assert edited != data
    s3_client.put_object(Bucket=us_bucket, Key=f"{PREFIX}manifest.json", Body=edited)
    _assert_refused(s3_client, us_bucket, lake, receive_now, "signature does not match")


def test_missing_or_foreign_signature_is_refused(
    s3_client, us_bucket, lake, keys, export_partition, make_partition, receive_now
):
    exported = export_partition(make_partition(1))
    other_private, other_public = crypto.generate_signing_keypair()

    _put_signed(s3_client, us_bucket, exported.manifest, other_private)
    _assert_refused(s3_client, us_bucket, lake, receive_now, "signature does not match")
    # ... and a receiver configured with the wrong CN key refuses the genuine signature.
    _put_signed(s3_client, us_bucket, exported.manifest, keys.signing_private)
    _assert_refused(
        s3_client, us_bucket, lake, receive_now, "signature", signing_public=other_public
    )

    s3_client.delete_object(Bucket=us_bucket, Key=f"{PREFIX}manifest.json.sig")
    _assert_refused(s3_client, us_bucket, lake, receive_now, "no signature")


def test_wrong_recipient_key_is_refused(
    s3_client, us_bucket, lake, export_partition, make_partition, receive_now
):
    export_partition(make_partition(1))
    other_private, _ = crypto.generate_recipient_keypair(2048)
    _assert_refused(
        s3_client,
        us_bucket,
        lake,
        receive_now,
        "not encrypted for this receiver: key_id",
        private_pem=other_private,
    )


def test_ciphertext_for_another_key_is_refused_even_if_the_manifest_claims_ours(
    s3_client, us_bucket, lake, keys, tmp_path, make_partition, receive_now
):
    """A signed manifest is not enough: each message must carry a data key for us."""
    [plain] = make_partition(1)
    key = landing.object_key(DATASET, DAY, plain.name)
    _, other_public = crypto.generate_recipient_keypair(2048)
    record = landing.upload_encrypted(s3_client, us_bucket, key, plain, other_public, tmp_path)
    manifest = copy.deepcopy(_manifest_for([record], keys.recipient_public))
    _put_signed(s3_client, us_bucket, manifest, keys.signing_private)

    error = _assert_refused(s3_client, us_bucket, lake, receive_now, "no data key for our key id")
    assert error.file == key


def test_manifest_pointing_outside_its_partition_is_refused(
    s3_client, us_bucket, lake, keys, export_partition, make_partition, receive_now
):
    exported = export_partition(make_partition(1))
    manifest = copy.deepcopy(exported.manifest)
    manifest["objects"][0]["key"] = "diagnostics/dt=2024-05-01/part-00000.parquet.encrypted"
    _put_signed(s3_client, us_bucket, manifest, keys.signing_private)
    _assert_refused(s3_client, us_bucket, lake, receive_now, "outside the partition")


def test_failed_receive_keeps_the_previous_landing(
    s3_client, us_bucket, lake, export_partition, make_partition, receive_now
):
    export_partition(make_partition(2, seed=1))
    first = receive_now()
    landed = {p: p.read_bytes() for p in _files(lake)}
    exported = export_partition(make_partition(2, seed=2))
    s3_client.put_object(Bucket=us_bucket, Key=exported.records[1]["key"], Body=b"not a message")

    with pytest.raises(IntegrityMismatch):
        receive_now()

    assert {p: p.read_bytes() for p in _files(lake)} == landed
    assert landing.read_receipt(s3_client, us_bucket, DATASET, DAY) == first.to_dict()


def test_cli_receives_pending_partitions_and_fails_loudly(
    s3_endpoint,
    s3_client,
    us_bucket,
    lake,
    keys,
    tmp_path,
    export_partition,
    make_partition,
    monkeypatch,
    capsys,
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    private, signing = tmp_path / "recipient.pem", tmp_path / "signing.pub.pem"
    private.write_bytes(keys.recipient_private)
    signing.write_bytes(keys.signing_public)
    args = [
        f"--endpoint-url={s3_endpoint}",
        f"--bucket={us_bucket}",
        f"--lake={lake}",
        f"--private-key={private}",
        f"--signing-public-key={signing}",
    ]
    export_partition(make_partition(2))

    assert receive.main(args) == 0
    out = capsys.readouterr().out
    assert out == (
        f"{DATASET} {DAY} objects=2 rows=101 lake={(lake / DATASET / f'dt={DAY}').resolve()}\n"
    )
    assert receive.main(args) == 0 and capsys.readouterr().out == ""  # nothing pending

    s3_client.put_object(Bucket=us_bucket, Key=f"{PREFIX}manifest.json.sig", Body=b"forged")
    assert receive.main([*args, f"--dataset={DATASET}", f"--date={DAY}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: dataset {DATASET}, day {DAY}, file {PREFIX}manifest.json: ")
    assert "signature does not match" in err

    assert receive.main([*args[:3], f"--private-key={tmp_path / 'nope.pem'}", args[4]]) == 1
    assert "cannot read recipient private key file" in capsys.readouterr().err


def _manifest_for(records: list[dict], recipient_public: bytes) -> dict:
    rows = sum(r["rows"] for r in records)
    return build_manifest(
        dataset=DATASET,
        partition_date=DAY,
        route="cleared",
        policy_version="sha256:test",
        dag_run_id="manual__1",
        rows_in=rows,
        rows_out=rows,
        quality={},
        objects=records,
        encryption=crypto.encryption_info(recipient_public),
    )
