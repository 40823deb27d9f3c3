"""The China exporter's side of the U.S. landing bucket, against a real S3 API (moto)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from conftest import DATASET, DAY, plan, write_parquet

from crossborder import crypto, landing
from crossborder.errors import IntegrityMismatch, UploadFailed
from crossborder.manifest import build_manifest, manifest_bytes, parse_manifest

MiB = 1 << 20
PREFIX = f"{DATASET}/dt={DAY}/"


def _keys(s3, bucket: str) -> set[str]:
    return set(landing.list_keys(s3, bucket, ""))


def _state(s3, bucket: str) -> dict[str, tuple]:
    """(ETag, LastModified) of every object: equal states mean nothing was rewritten."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: (o["ETag"], o["LastModified"]) for p in pages for o in p.get("Contents", [])}


def _manifest(s3, bucket: str) -> bytes | None:
    return landing.get_bytes(s3, bucket, landing.manifest_key(DATASET, DAY))


@contextmanager
def _calls(s3, *operations: str) -> Iterator[list[tuple[str, str]]]:
    """Record (operation, key) of every call of these S3 operations, in the order made."""
    made: list[tuple[str, str]] = []

    def record(model, context, **_):
        made.append((model.name, context["input_params"]["Key"]))

    events = [f"before-call.s3.{op}" for op in operations]
    for event in events:
        s3.meta.events.register(event, record)
    try:
        yield made
    finally:
        for event in events:
            s3.meta.events.unregister(event, record)


def _forbid_encryption(monkeypatch) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("re-encrypted")

    monkeypatch.setattr(crypto, "encrypt_file", refuse)


# --- layout and manifest ----------------------------------------------------------------


def test_layout():
    assert landing.partition_prefix(DATASET, DAY) == PREFIX
    assert landing.object_key(DATASET, DAY, "part-00007.parquet") == (
        f"{PREFIX}part-00007.parquet.encrypted"
    )
    assert landing.split_key(f"{PREFIX}manifest.json") == (DATASET, DAY, "manifest.json")
    for bad in [("../x", DAY, "part-00000.parquet"), (DATASET, "2024-5-1", "part-00000.parquet")]:
        with pytest.raises(ValueError):
            landing.object_key(*bad)
    with pytest.raises(ValueError):
        landing.object_key(DATASET, DAY, "../part-00000.parquet")


def _valid_manifest(**changes) -> dict:
    fields = {
        "dataset": DATASET,
        "partition_date": DAY,
        "route": "cleared",
        "policy_version": "sha256:abc",
        "dag_run_id": "scheduled__1",
        "rows_in": 10,
        "rows_out": 7,
        "quality": {"raw": {"success": True}},
        "objects": [
            {
                "key": f"{PREFIX}part-00000.parquet.encrypted",
                "part": "part-00000.parquet",
                "size": 100,
                "sha256": "a" * 64,
                "plaintext_size": 80,
                "plaintext_sha256": "b" * 64,
                "rows": 7,
            }
        ],
        "encryption": {
            "format": "aws-encryption-sdk-message",
            "algorithm": "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
            "frame_length": MiB,
            "key_provider": "crossborder",
            "key_id": "rsa-sha256:" + "0" * 32,
            "wrapping": "RSA_OAEP_SHA256_MGF1",
        },
        "created_at": "2024-05-02T01:00:00+00:00",
    }
    return build_manifest(**{**fields, **changes})


def test_manifest_bytes_are_canonical_and_round_trip():
    manifest = _valid_manifest()
    data = manifest_bytes(manifest)
    assert data == manifest_bytes(dict(reversed(list(manifest.items()))))
    assert data.endswith(b"}\n") and data.startswith(
        b'{\n  "anonymization": {},\n  "approvals": []'
    )
    assert parse_manifest(data, dataset=DATASET, day=DAY) == manifest
    assert manifest["manifest_version"] == 1 and manifest["extra"] == {}
    assert "created_at" in _valid_manifest(created_at=None)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("objects"), "missing field objects"),
        (lambda m: m["objects"][0].pop("sha256"), "missing field objects[0].sha256"),
        (lambda m: m["encryption"].pop("key_id"), "missing field encryption.key_id"),
        (lambda m: m.update(partition_date="2024-05-02"), "does not match"),
        (lambda m: m.update(dataset="diagnostics"), "does not match its location"),
        (lambda m: m.update(rows_out=8), "objects hold 7 rows but rows_out is 8"),
        (lambda m: m.update(route="blocked"), "route 'blocked' is not exportable"),
        (lambda m: m.update(route="cac_review"), "needs at least one approval"),
        (lambda m: m["objects"][0].update(part="../x.parquet"), "is not like part-00000"),
        (lambda m: m["objects"][0].update(size="100"), "objects[0].size must be int"),
        (lambda m: m.update(manifest_version=2), "manifest_version 2 is not supported"),
    ],
)
def test_parse_manifest_names_what_is_wrong(edit, message):
    manifest = copy.deepcopy(_valid_manifest())
    edit(manifest)
    with pytest.raises(IntegrityMismatch, match=re.escape(message)) as caught:
        parse_manifest(json.dumps(manifest).encode(), dataset=DATASET, day=DAY)
    assert caught.value.dataset == DATASET and caught.value.day == DAY


def test_cac_review_manifest_carries_approvals():
    approval = {"by": "li.wei", "at": "2024-05-02T03:00:00+00:00", "cac_reference": "CAC-2024-1"}
    manifest = _valid_manifest(route="cac_review", approvals=[approval])
    assert manifest["approvals"] == [approval]
    with pytest.raises(IntegrityMismatch, match=r"approvals\[0\].cac_reference"):
        _valid_manifest(route="cac_review", approvals=[{"by": "x", "at": "y"}])


def test_parse_manifest_refuses_non_json():
    with pytest.raises(IntegrityMismatch, match="not valid UTF-8 JSON"):
        parse_manifest(b"\xff{", dataset=DATASET, day=DAY)


# --- upload -----------------------------------------------------------------------------


def test_upload_sets_metadata_checksum_and_returns_record(
    s3_client, us_bucket, keys, tmp_path, make_partition
):
    [plain] = make_partition(1)
    key = landing.object_key(DATASET, DAY, plain.name)
    record = landing.upload_encrypted(
        s3_client, us_bucket, key, plain, keys.recipient_public, tmp_path
    )

    head = s3_client.head_object(Bucket=us_bucket, Key=key, ChecksumMode="ENABLED")
    assert record["key"] == key and record["part"] == "part-00000.parquet"
    assert record["rows"] == 50
    assert record["plaintext_sha256"] == hashlib.sha256(plain.read_bytes()).hexdigest()
    assert record["size"] == head["ContentLength"]
    assert head["Metadata"] == {
        "plaintext-sha256": record["plaintext_sha256"],
        "plaintext-size": str(record["plaintext_size"]),
        "sha256": record["sha256"],
        "size": str(record["size"]),
        "key-id": crypto.key_id(keys.recipient_public),
        "s3-checksum": base64.b64encode(bytes.fromhex(record["sha256"])).decode(),
    }
    assert head["ChecksumSHA256"] == head["Metadata"]["s3-checksum"]
    body = s3_client.get_object(Bucket=us_bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == record["sha256"]
    assert [p.name for p in tmp_path.iterdir()] == ["staging-0"]  # temp ciphertext removed


def test_multipart_upload_verifies_composite_checksum(s3_client, us_bucket, keys, tmp_path):
    plain = write_parquet(tmp_path / "big" / "part-00000.parquet", 12, blob_bytes=MiB)
    assert plain.stat().st_size > 12 * MiB
    key = landing.object_key(DATASET, DAY, plain.name)
    transfer = landing.TransferSettings(multipart_threshold=5 * MiB, part_size=5 * MiB)
    record = landing.upload_encrypted(
        s3_client, us_bucket, key, plain, keys.recipient_public, tmp_path, transfer
    )

    got = s3_client.get_object(Bucket=us_bucket, Key=key, ChecksumMode="ENABLED")
    body = got["Body"].read()
    assert got["ETag"].endswith('-3"')  # three parts: 5 + 5 + ~2 MiB
    parts = [body[i : i + 5 * MiB] for i in range(0, len(body), 5 * MiB)]
    composite = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    assert got["ChecksumSHA256"] == base64.b64encode(composite).decode() + "-3"
    assert got["Metadata"]["s3-checksum"] == got["ChecksumSHA256"]
    assert hashlib.sha256(body).hexdigest() == record["sha256"]


def test_multipart_object_is_reused_on_rerun(s3_client, us_bucket, keys, tmp_path, monkeypatch):
    """moto's HEAD shows a composite checksum without its "-N": reuse must still work."""
    plain = write_parquet(tmp_path / "big" / "part-00000.parquet", 12, blob_bytes=MiB)
    key = landing.object_key(DATASET, DAY, plain.name)
    transfer = landing.TransferSettings(multipart_threshold=5 * MiB, part_size=5 * MiB)

    def upload() -> dict:
        return landing.upload_encrypted(
            s3_client, us_bucket, key, plain, keys.recipient_public, tmp_path, transfer
        )

    first = upload()
    before = _state(s3_client, us_bucket)
    assert before[key][0].endswith('-3"')
    _forbid_encryption(monkeypatch)
    assert upload() == first
    assert _state(s3_client, us_bucket) == before


def test_upload_verification_catches_a_store_that_kept_something_else(
    s3_client, us_bucket, keys, tmp_path, make_partition
):
    [plain] = make_partition(1)
    key = landing.object_key(DATASET, DAY, plain.name)

    def corrupt(params, **_):  # the store records other metadata than we sent
        params["Metadata"] = {**params["Metadata"], "sha256": "0" * 64}

    s3_client.meta.events.register("before-parameter-build.s3.PutObject", corrupt)
    try:
        with pytest.raises(IntegrityMismatch, match="uploaded object differs") as caught:
            landing.upload_encrypted(
                s3_client, us_bucket, key, plain, keys.recipient_public, tmp_path
            )
    finally:
        s3_client.meta.events.unregister("before-parameter-build.s3.PutObject", corrupt)
    assert (caught.value.dataset, caught.value.day, caught.value.file) == (DATASET, DAY, key)
    assert key not in _keys(s3_client, us_bucket)  # a bad object is not left for reuse


def test_upload_errors_name_dataset_day_and_key(s3_client, keys, tmp_path, make_partition):
    [plain] = make_partition(1)
    key = landing.object_key(DATASET, DAY, plain.name)
    with pytest.raises(UploadFailed, match="NoSuchBucket") as caught:
        landing.upload_encrypted(
            s3_client, "no-such-bucket", key, plain, keys.recipient_public, tmp_path
        )
    assert str(caught.value).startswith(f"dataset {DATASET}, day {DAY}, file {key}: ")


def test_upload_reuses_an_object_only_for_the_same_plaintext_and_key(
    s3_client, us_bucket, keys, tmp_path, make_partition, monkeypatch
):
    [plain] = make_partition(1)
    key = landing.object_key(DATASET, DAY, plain.name)

    def upload(recipient_public: bytes = keys.recipient_public) -> dict:
        return landing.upload_encrypted(
            s3_client, us_bucket, key, plain, recipient_public, tmp_path
        )

    first = upload()
    before = _state(s3_client, us_bucket)
    with monkeypatch.context() as patch:
        _forbid_encryption(patch)
        assert upload() == first
    assert _state(s3_client, us_bucket) == before

    # Other plaintext means a new object ...
    write_parquet(plain, 50, seed=7)
    changed = upload()
    assert changed["plaintext_sha256"] == hashlib.sha256(plain.read_bytes()).hexdigest()
    assert changed["plaintext_sha256"] != first["plaintext_sha256"]
    after_change = _state(s3_client, us_bucket)
    assert after_change[key] != before[key]

    # ... and so does another recipient key.
    _, other_public = crypto.generate_recipient_keypair(2048)
    upload(other_public)
    assert _state(s3_client, us_bucket)[key] != after_change[key]


def test_upload_refuses_a_staged_file_changed_since_it_was_planned(
    s3_client, keys, tmp_path, make_partition
):
    [plain] = make_partition(1)
    key = landing.object_key(DATASET, DAY, plain.name)
    # No such bucket: any S3 call made before the check would fail with NoSuchBucket.
    with pytest.raises(IntegrityMismatch, match="staged file changed since it was planned") as e:
        landing.upload_encrypted(
            s3_client,
            "no-such-bucket",
            key,
            plain,
            keys.recipient_public,
            tmp_path,
            expected_plaintext_sha256="0" * 64,
        )
    assert e.value.file == key


def test_upload_aborts_its_own_interrupted_multipart_upload(
    s3_client, us_bucket, keys, tmp_path, make_partition
):
    """An Airflow retry of a killed upload task runs upload_encrypted alone."""
    [plain] = make_partition(1)
    key = landing.object_key(DATASET, DAY, plain.name)
    s3_client.create_multipart_upload(Bucket=us_bucket, Key=key)
    sibling = s3_client.create_multipart_upload(
        Bucket=us_bucket, Key=f"{PREFIX}part-00001.parquet.encrypted"
    )

    landing.upload_encrypted(s3_client, us_bucket, key, plain, keys.recipient_public, tmp_path)

    uploads = s3_client.list_multipart_uploads(Bucket=us_bucket).get("Uploads", [])
    assert [u["UploadId"] for u in uploads] == [sibling["UploadId"]]  # other keys untouched


# --- prepare / publish: idempotency and crash recovery ----------------------------------


def test_objects_are_written_before_the_signature_and_the_manifest_last(
    s3_client, us_bucket, export_partition, make_partition
):
    files = make_partition(2)
    big = write_parquet(files[0].parent / "part-00002.parquet", 6, blob_bytes=MiB)
    transfer = landing.TransferSettings(multipart_threshold=5 * MiB, part_size=5 * MiB)

    with _calls(s3_client, "PutObject", "CompleteMultipartUpload") as writes:
        result = export_partition([*files, big], transfer=transfer)

    assert ("CompleteMultipartUpload", landing.object_key(DATASET, DAY, big.name)) in writes
    written = [key for _, key in writes]
    assert sorted(written[:-2]) == sorted(result.published.keys)  # each object once, first
    assert written[-2:] == [f"{PREFIX}manifest.json.sig", f"{PREFIX}manifest.json"]


def test_export_publishes_signed_manifest_last(
    s3_client, us_bucket, keys, export_partition, make_partition
):
    files = make_partition(3)
    result = export_partition(files)

    assert _keys(s3_client, us_bucket) == {
        *(landing.object_key(DATASET, DAY, f.name) for f in files),
        f"{PREFIX}manifest.json",
        f"{PREFIX}manifest.json.sig",
    }
    data = _manifest(s3_client, us_bucket)
    assert data == manifest_bytes(result.manifest)
    assert result.published.sha256 == hashlib.sha256(data).hexdigest()
    assert result.published.uri == f"s3://{us_bucket}/{PREFIX}manifest.json"
    signature = landing.get_bytes(s3_client, us_bucket, f"{PREFIX}manifest.json.sig")
    crypto.verify_signature(data, signature, keys.signing_public)
    assert landing.read_receipt(s3_client, us_bucket, DATASET, DAY) is None
    assert result.manifest["rows_out"] == 50 + 51 + 52


def test_rerunning_the_export_changes_nothing(
    s3_client, us_bucket, export_partition, make_partition
):
    files = make_partition(3)
    first = export_partition(files)
    before = _state(s3_client, us_bucket)
    manifest_before = _manifest(s3_client, us_bucket)

    second = export_partition(files)  # a retry: new created_at, same export

    assert second.prepared.already_published and not second.prepared.withdrawn_manifest
    assert second.published.unchanged
    assert second.records == first.records
    assert second.published.sha256 == first.published.sha256
    assert _state(s3_client, us_bucket) == before  # no re-encryption, no rewrite
    assert _manifest(s3_client, us_bucket) == manifest_before


def test_publish_twice_is_a_no_op(s3_client, us_bucket, keys, export_partition, make_partition):
    result = export_partition(make_partition(2))
    before = _state(s3_client, us_bucket)
    again = landing.publish_manifest(
        s3_client, us_bucket, DATASET, DAY, result.manifest, keys.signing_private
    )
    assert again.unchanged and again.sha256 == result.published.sha256
    assert _state(s3_client, us_bucket) == before


def test_prepare_aborts_an_interrupted_multipart_upload(
    s3_client, us_bucket, export_partition, make_partition
):
    key = f"{PREFIX}part-00000.parquet.encrypted"
    upload = s3_client.create_multipart_upload(Bucket=us_bucket, Key=key)
    s3_client.upload_part(
        Bucket=us_bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024
    )
    other_day = s3_client.create_multipart_upload(
        Bucket=us_bucket, Key=f"{DATASET}/dt=2024-05-02/part-00000.parquet.encrypted"
    )

    result = export_partition(make_partition(1))

    assert result.prepared.aborted_uploads == 1
    uploads = s3_client.list_multipart_uploads(Bucket=us_bucket).get("Uploads", [])
    assert [u["UploadId"] for u in uploads] == [other_day["UploadId"]]  # other days untouched
    assert _manifest(s3_client, us_bucket) is not None


def test_objects_left_without_manifest_are_reused_or_replaced(
    s3_client, us_bucket, keys, tmp_path, export_partition, make_partition
):
    """A run killed after uploading: the next run reuses good objects and finishes."""
    files = make_partition(2)
    landing.upload_encrypted(
        s3_client,
        us_bucket,
        landing.object_key(DATASET, DAY, files[0].name),
        files[0],
        keys.recipient_public,
        tmp_path,
    )
    stale = make_partition(2, seed=9, name="older")[1]  # part-00001 from an older attempt
    landing.upload_encrypted(
        s3_client,
        us_bucket,
        landing.object_key(DATASET, DAY, stale.name),
        stale,
        keys.recipient_public,
        tmp_path,
    )
    before = _state(s3_client, us_bucket)

    result = export_partition(files)

    after = _state(s3_client, us_bucket)
    reused, replaced = (landing.object_key(DATASET, DAY, f.name) for f in files)
    assert after[reused] == before[reused]
    assert after[replaced] != before[replaced]
    assert not result.prepared.already_published and result.published.keys == (reused, replaced)


def test_older_manifest_is_withdrawn_before_objects_change_and_strays_go(
    s3_client, us_bucket, keys, export_partition, make_partition
):
    export_partition(make_partition(3, seed=1))
    s3_client.put_object(
        Bucket=us_bucket, Key=f"{PREFIX}receipt.json", Body=b'{"manifest_sha256": "old"}'
    )
    new_files = make_partition(2, seed=2)
    kid = crypto.key_id(keys.recipient_public)

    prepared = landing.prepare_partition(s3_client, us_bucket, DATASET, DAY, plan(new_files), kid)

    # No visible manifest (nor a lone signature) while the objects are about to change.
    assert prepared.withdrawn_manifest and not prepared.already_published
    assert _manifest(s3_client, us_bucket) is None
    assert f"{PREFIX}manifest.json.sig" not in _keys(s3_client, us_bucket)

    result = export_partition(new_files)

    assert _keys(s3_client, us_bucket) == {
        *result.published.keys,
        f"{PREFIX}manifest.json",
        f"{PREFIX}manifest.json.sig",
        f"{PREFIX}receipt.json",  # the receiver's file is never ours to delete
    }
    assert f"{PREFIX}part-00002.parquet.encrypted" not in result.published.keys
    assert json.loads(_manifest(s3_client, us_bucket))["rows_out"] == 50 + 51


def test_a_new_recipient_key_withdraws_the_manifest_before_objects_are_replaced(
    s3_client, us_bucket, keys, export_partition, make_partition
):
    files = make_partition(2)
    export_partition(files)
    _, new_public = crypto.generate_recipient_keypair(2048)
    new_kid = crypto.key_id(new_public)

    prepared = landing.prepare_partition(s3_client, us_bucket, DATASET, DAY, plan(files), new_kid)

    assert prepared.withdrawn_manifest and not prepared.already_published
    assert not {f"{PREFIX}manifest.json", f"{PREFIX}manifest.json.sig"} & _keys(
        s3_client, us_bucket
    )
    result = export_partition(files, recipient_public=new_public)
    assert result.manifest["encryption"]["key_id"] == new_kid
    for key in result.published.keys:
        assert s3_client.head_object(Bucket=us_bucket, Key=key)["Metadata"]["key-id"] == new_kid


def test_replacing_a_listed_object_withdraws_the_manifest_first(
    s3_client, us_bucket, keys, tmp_path, export_partition, make_partition
):
    """Whatever the caller did before: no visible manifest points at a replaced object."""
    files = make_partition(2)
    export_partition(files)
    key = landing.object_key(DATASET, DAY, files[0].name)
    _, new_public = crypto.generate_recipient_keypair(2048)

    with _calls(s3_client, "DeleteObject", "PutObject") as calls:
        landing.upload_encrypted(s3_client, us_bucket, key, files[0], new_public, tmp_path)

    assert calls == [
        ("DeleteObject", f"{PREFIX}manifest.json"),
        ("DeleteObject", f"{PREFIX}manifest.json.sig"),
        ("PutObject", key),
    ]
    # Adding an object the manifest does not list leaves it visible.
    export_partition(files)
    extra = write_parquet(tmp_path / "extra" / "part-00002.parquet", 5)
    new_key = landing.object_key(DATASET, DAY, extra.name)
    landing.upload_encrypted(s3_client, us_bucket, new_key, extra, keys.recipient_public, tmp_path)
    assert _manifest(s3_client, us_bucket) is not None


def test_publish_refuses_a_manifest_the_objects_do_not_match(
    s3_client, us_bucket, keys, export_partition, make_partition
):
    result = export_partition(make_partition(2))
    manifest = copy.deepcopy(result.manifest)
    manifest["objects"][1]["sha256"] = "f" * 64
    manifest["dag_run_id"] = "manual__retry"
    before = _state(s3_client, us_bucket)

    with pytest.raises(IntegrityMismatch, match=r"refusing to publish: .*part-00001") as caught:
        landing.publish_manifest(s3_client, us_bucket, DATASET, DAY, manifest, keys.signing_private)
    assert caught.value.file == f"{PREFIX}manifest.json"
    assert _state(s3_client, us_bucket) == before  # the old, correct manifest stays

    s3_client.delete_object(Bucket=us_bucket, Key=manifest["objects"][0]["key"])
    with pytest.raises(IntegrityMismatch, match=r"part-00000\.parquet\.encrypted is missing"):
        landing.publish_manifest(
            s3_client, us_bucket, DATASET, DAY, result.manifest, keys.signing_private
        )


def test_a_different_manifest_replaces_the_old_one(
    s3_client, us_bucket, keys, export_partition, make_partition
):
    result = export_partition(make_partition(1))
    manifest = {**result.manifest, "dag_run_id": "manual__rerun"}
    published = landing.publish_manifest(
        s3_client, us_bucket, DATASET, DAY, manifest, keys.signing_private
    )
    assert not published.unchanged and published.sha256 != result.published.sha256
    data = _manifest(s3_client, us_bucket)
    assert json.loads(data)["dag_run_id"] == "manual__rerun"
    signature = landing.get_bytes(s3_client, us_bucket, f"{PREFIX}manifest.json.sig")
    crypto.verify_signature(data, signature, keys.signing_public)
