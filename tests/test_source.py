"""The Shanghai source as an S3-compatible object store, against a real S3 API (moto server):
readiness, the China-side mirror and extraction, idempotence, refusals, the steps."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from datetime import date, datetime
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from moto.core import enable_iam_authentication

from crossborder import ledger, steps, synthetic
from crossborder.errors import PartitionInvalid
from crossborder.extract import SHANGHAI, extract_partition, partition_path
from crossborder.localenv import LocalEnv
from crossborder.source import FolderSource, S3Source, mirror_root, source_of

DATASET = "production_quality"
DAY = "2026-11-23"
PREFIX = "shanghai/raw"
# Ranged downloads of 8 KiB, one at a time: the synthetic parts (~37 KB) take several GETs.
SMALL_RANGES = TransferConfig(
    multipart_threshold=8 << 10, multipart_chunksize=8 << 10, max_concurrency=1
)


def _client(endpoint: str, key: str = "testing", secret: str = "testing"):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


@pytest.fixture
def cn_bucket(s3_client) -> str:
    """A fresh, empty bucket standing in for the Shanghai store."""
    name = f"cn-source-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def source(s3_endpoint, cn_bucket, tmp_path) -> S3Source:
    return S3Source(
        cn_bucket,
        lambda: _client(s3_endpoint),
        mirror_root(tmp_path / "staging"),
        prefix=PREFIX,
        transfer=SMALL_RANGES,
    )


@pytest.fixture
def folder(tmp_path) -> Path:
    """A synthetic Shanghai day written as a folder source: three parts and _SUCCESS."""
    root = tmp_path / "generated"
    synthetic.generate_partition(
        root, DATASET, date.fromisoformat(DAY), rows=3000, rows_per_file=1000
    )
    return root


def _key(name: str, dataset: str = DATASET, day: str = DAY) -> str:
    return f"{PREFIX}/{dataset}/dt={day}/{name}"


def _upload(s3, bucket: str, root: Path, *, marker: bool = True) -> list[str]:
    """Deliver a folder partition to the bucket as the Shanghai side does: parts, then
    ``_SUCCESS`` last."""
    partition = partition_path(root, DATASET, DAY)
    parts = sorted(p for p in partition.iterdir() if p.name != "_SUCCESS")
    for path in parts:
        s3.upload_file(str(path), bucket, _key(path.name))
    if marker:
        s3.put_object(Bucket=bucket, Key=_key("_SUCCESS"), Body=b"")
    return [p.name for p in parts]


def _state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file in a folder (hidden ones too): name → (inode, mtime)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def _comparable(found) -> list[tuple]:
    return [(f.name, f.size, f.sha256, f.rows) for f in found.files]


# --- readiness ----------------------------------------------------------------------------


def test_ready_only_once_the_success_object_exists(source, s3_client, cn_bucket, folder):
    assert not source.is_ready(DATASET, DAY)
    _upload(s3_client, cn_bucket, folder, marker=False)
    s3_client.put_object(Bucket=cn_bucket, Key=_key("_SUCCESS.tmp"), Body=b"")
    assert not source.is_ready(DATASET, DAY)
    with pytest.raises(PartitionInvalid, match="no _SUCCESS marker in s3://"):
        source.extract(DATASET, DAY)

    s3_client.put_object(Bucket=cn_bucket, Key=_key("_SUCCESS"), Body=b"")
    assert source.is_ready(DATASET, DAY)
    assert not source.is_ready(DATASET, "2026-11-24")
    assert source.location(DATASET, DAY) == f"s3://{cn_bucket}/{PREFIX}/{DATASET}/dt={DAY}/"


# --- mirror and extract -------------------------------------------------------------------


def test_extract_mirrors_the_partition_and_matches_the_folder_source(
    source, s3_client, cn_bucket, folder
):
    names = _upload(s3_client, cn_bucket, folder)
    # Names a folder source skips are skipped here too.
    s3_client.put_object(Bucket=cn_bucket, Key=_key("_committed_123"), Body=b"x")
    s3_client.put_object(Bucket=cn_bucket, Key=_key(".part-00000.parquet.crc"), Body=b"x")

    found = source.extract(DATASET, DAY)

    mirror = partition_path(source.mirror_root, DATASET, DAY)
    assert found.path == str(mirror)
    assert [f.name for f in found.files] == names == ["part-00000.parquet", "part-00001.parquet",
                                                      "part-00002.parquet"]  # fmt: skip
    assert all(Path(f.path).parent == mirror for f in found.files)
    assert _comparable(found) == _comparable(extract_partition(folder, DATASET, DAY))
    assert found.rows == 3000
    assert (mirror / "_SUCCESS").is_file()
    assert not (mirror / "_committed_123").exists()
    # The record of each mirrored object: its key and ETag, and the local copy.
    record = json.loads((mirror / ".part-00001.parquet.source.json").read_text())
    head = s3_client.head_object(Bucket=cn_bucket, Key=_key("part-00001.parquet"))
    assert record["key"] == _key("part-00001.parquet")
    assert record["etag"] == head["ETag"].strip('"')
    assert record["size"] == head["ContentLength"] == found.files[1].size
    assert record["mtime_ns"] == found.files[1].mtime_ns
    # Nothing half-written is left next to the parts.
    assert not [p for p in mirror.iterdir() if ".download-" in p.name]
    found.check_unchanged()


def test_a_second_extraction_downloads_nothing(source, s3_client, cn_bucket, folder):
    _upload(s3_client, cn_bucket, folder)
    assert source.mirror(DATASET, DAY) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    mirror = partition_path(source.mirror_root, DATASET, DAY)
    before = _state(mirror)
    first = source.extract(DATASET, DAY)

    assert source.mirror(DATASET, DAY) == []
    again = source.extract(DATASET, DAY)

    assert again == first
    assert _state(mirror) == before
    # A local copy that went missing or was altered is fetched again; only that one.
    (mirror / "part-00002.parquet").unlink()
    (mirror / "part-00000.parquet").write_bytes(b"tampered")
    assert source.mirror(DATASET, DAY) == ["part-00000.parquet", "part-00002.parquet"]
    restored = source.extract(DATASET, DAY)
    assert _comparable(restored) == _comparable(first)
    assert _state(mirror)["part-00001.parquet"] == before["part-00001.parquet"]


# A real process killed while it downloads: it stops once the first range is written.
KILLED_DOWNLOAD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import boto3
    from boto3.s3.transfer import TransferConfig
    from crossborder.source import S3Source

    endpoint, bucket, mirror, prefix = sys.argv[1:5]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    calls = []
    def stall(**_):
        calls.append(1)
        if len(calls) == 2:
            print("first range written", flush=True)
            time.sleep(600)
    s3.meta.events.register("after-call.s3.GetObject", stall)
    config = TransferConfig(multipart_threshold=8 << 10, multipart_chunksize=8 << 10,
                            max_concurrency=1)
    S3Source(bucket, lambda: s3, Path(mirror), prefix=prefix, transfer=config).mirror(
        "production_quality", "2026-11-23")
    """
)


def test_a_download_killed_midway_leaves_nothing_half_written(source, s3_client, cn_bucket, folder):
    _upload(s3_client, cn_bucket, folder)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_DOWNLOAD,
            source.client().meta.endpoint_url,
            cn_bucket,
            str(source.mirror_root),
            PREFIX,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert proc.stdout.readline().strip() == "first range written"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    mirror = partition_path(source.mirror_root, DATASET, DAY)
    leftovers = [p for p in mirror.iterdir() if ".download-" in p.name]
    assert leftovers and all(p.name.startswith(".") for p in leftovers)
    assert not (mirror / "part-00000.parquet").exists()
    assert not (mirror / "_SUCCESS").exists()

    found = source.extract(DATASET, DAY)  # the next run completes the mirror

    assert _comparable(found) == _comparable(extract_partition(folder, DATASET, DAY))
    # A temporary file nobody has written for an hour belongs to a dead run: removed.
    for path in leftovers:
        os.utime(path, (0, 0))
    assert source.mirror(DATASET, DAY) == []
    assert not [p for p in mirror.iterdir() if ".download-" in p.name]


# --- refusals -----------------------------------------------------------------------------


def test_a_source_object_changed_after_mirroring_is_refused(
    source, s3_client, cn_bucket, folder, tmp_path
):
    _upload(s3_client, cn_bucket, folder)
    first = source.extract(DATASET, DAY)
    other = tmp_path / "other"
    synthetic.generate_partition(
        other, DATASET, date.fromisoformat(DAY), rows=3000, rows_per_file=1000, seed=7
    )
    changed = partition_path(other, DATASET, DAY) / "part-00001.parquet"
    s3_client.upload_file(str(changed), cn_bucket, _key("part-00001.parquet"))

    with pytest.raises(PartitionInvalid) as refused:
        source.extract(DATASET, DAY)

    uri = f"s3://{cn_bucket}/{_key('part-00001.parquet')}"
    assert refused.value.kind == "partition_invalid"
    assert (refused.value.dataset, refused.value.day, refused.value.file) == (DATASET, DAY, uri)
    message = str(refused.value)
    assert message.startswith(f"dataset {DATASET}, day {DAY}, file {uri}: ")
    assert "source object changed since the partition was mirrored: was ETag " in message
    assert "delete the mirror" in message
    # The mirror still holds what was extracted: earlier extracts stay valid.
    first.check_unchanged()


def test_objects_removed_or_added_after_mirroring_are_refused(source, s3_client, cn_bucket, folder):
    _upload(s3_client, cn_bucket, folder)
    source.extract(DATASET, DAY)

    s3_client.delete_object(Bucket=cn_bucket, Key=_key("part-00002.parquet"))
    with pytest.raises(PartitionInvalid, match=r"part-00002\.parquet: .*no longer in the source"):
        source.extract(DATASET, DAY)

    s3_client.upload_file(
        str(partition_path(folder, DATASET, DAY) / "part-00002.parquet"),
        cn_bucket,
        _key("part-00002.parquet"),
    )
    source.extract(DATASET, DAY)  # the same object again: accepted
    s3_client.copy_object(
        Bucket=cn_bucket,
        Key=_key("part-00003.parquet"),
        CopySource={"Bucket": cn_bucket, "Key": _key("part-00000.parquet")},
    )
    with pytest.raises(PartitionInvalid, match=r"part-00003\.parquet: .*new since the partition"):
        source.extract(DATASET, DAY)


def test_a_stranger_object_is_refused_as_the_folder_source_refuses_it(
    source, s3_client, cn_bucket, folder
):
    _upload(s3_client, cn_bucket, folder)
    s3_client.put_object(Bucket=cn_bucket, Key=_key("notes.txt"), Body=b"hello")
    (partition_path(folder, DATASET, DAY) / "notes.txt").write_text("hello")

    with pytest.raises(PartitionInvalid) as from_s3:
        source.extract(DATASET, DAY)
    with pytest.raises(PartitionInvalid) as from_folder:
        FolderSource(folder).extract(DATASET, DAY)

    assert from_s3.value.detail == from_folder.value.detail
    assert from_s3.value.detail == "unexpected files in the partition: notes.txt"
    assert from_s3.value.file == f"s3://{cn_bucket}/{_key('notes.txt')}"
    assert not partition_path(source.mirror_root, DATASET, DAY).exists()  # nothing fetched


def test_an_empty_partition_is_refused(source, s3_client, cn_bucket):
    s3_client.put_object(Bucket=cn_bucket, Key=_key("_SUCCESS"), Body=b"")
    with pytest.raises(PartitionInvalid, match="no part files in s3://"):
        source.extract(DATASET, DAY)


def test_a_missing_bucket_is_a_clear_error(s3_endpoint, tmp_path):
    missing = S3Source("no-such-shanghai-bucket", lambda: _client(s3_endpoint), tmp_path / "m")
    for call in (missing.is_ready, missing.extract):
        with pytest.raises(PartitionInvalid, match="the bucket does not exist") as refused:
            call(DATASET, DAY)
        assert refused.value.dataset == DATASET and refused.value.day == DAY
        assert "connection cn_source (bucket 'no-such-shanghai-bucket'" in str(refused.value)


def test_missing_permissions_and_unknown_keys_are_clear_errors(
    s3_endpoint, cn_bucket, s3_client, folder, tmp_path
):
    """With IAM enforced: a reader allowed to list but not to read, and an unknown key."""
    _upload(s3_client, cn_bucket, folder)
    iam = boto3.client(
        "iam",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    user = f"lister-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    only_list = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{cn_bucket}"}
        ],
    }
    iam.put_user_policy(UserName=user, PolicyName="list", PolicyDocument=json.dumps(only_list))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    lister = S3Source(
        cn_bucket,
        lambda: _client(s3_endpoint, key["AccessKeyId"], key["SecretAccessKey"]),
        tmp_path / "m1",
        prefix=PREFIX,
    )
    stranger = S3Source(
        cn_bucket, lambda: _client(s3_endpoint, "AKIAUNKNOWN", "nope"), tmp_path / "m2"
    )

    with enable_iam_authentication():
        assert lister.is_ready(DATASET, DAY)
        with pytest.raises(PartitionInvalid, match="access denied") as denied:
            lister.extract(DATASET, DAY)
        with pytest.raises(PartitionInvalid, match="unknown access key"):
            stranger.is_ready(DATASET, DAY)

    assert denied.value.file == f"s3://{cn_bucket}/{_key('part-00000.parquet')}"
    assert "s3:GetObject" in str(denied.value)
    assert list(partition_path(tmp_path / "m1", DATASET, DAY).iterdir()) == []


# --- the daily export's steps from an S3 source ---------------------------------------------


def test_the_export_steps_run_from_an_s3_source(
    tmp_path, s3_endpoint, s3_client, cn_bucket, folder
):
    from crossborder import landing
    from crossborder.localenv import US_BUCKET

    env = LocalEnv(tmp_path / "env", s3_endpoint)
    if US_BUCKET in {b["Name"] for b in s3_client.list_buckets().get("Buckets", [])}:
        for key in landing.list_keys(s3_client, US_BUCKET, ""):
            s3_client.delete_object(Bucket=US_BUCKET, Key=key)
    env.prepare()
    mirror = mirror_root(env.staging)
    s3 = S3Source(cn_bucket, lambda: _client(s3_endpoint), mirror, prefix=PREFIX)
    cfg = dataclasses.replace(env.settings(), source_root=mirror, source=s3)
    assert source_of(cfg) is s3
    run_id = "run-s3"

    late = datetime(2026, 11, 24, 9, 30, tzinfo=SHANGHAI)
    assert not steps.partition_ready(cfg, DATASET, DAY, run_id, "09:00", now=late)
    events = ledger.list_events(ledger.connect(cfg.ledger_url), DATASET, DAY)
    [alert] = [e["detail"] for e in events if e["kind"] == "alert"]
    assert alert["kind"] == "partition_late"
    assert f"no _SUCCESS marker in s3://{cn_bucket}/{PREFIX}/{DATASET}/dt={DAY}/" in alert["cause"]

    _upload(s3_client, cn_bucket, folder)
    assert steps.partition_ready(cfg, DATASET, DAY, run_id, "09:00", now=late)
    extracted = steps.extract(cfg, DATASET, DAY, run_id)
    quality = steps.validate(cfg, extracted, run_id)
    staged = steps.anonymize(cfg, extracted, run_id)
    verification = steps.verify(cfg, staged, run_id)
    decision = steps.decide(cfg, DATASET, DAY, run_id, quality, staged, verification)
    parts = steps.plan_upload(cfg, staged, decision)
    objects = [steps.upload_part(cfg, part) for part in parts]
    published = steps.publish(
        cfg, DATASET, DAY, run_id, objects, quality, staged, verification, decision, extracted
    )

    assert extracted["rows"] == 3000
    assert all(f["path"].startswith(str(mirror)) for f in extracted["files"])
    assert quality["status"] == "passed"
    assert decision["route"] == "cleared"
    assert published["objects"] == 3
    assert published["manifest"].startswith(f"s3://{US_BUCKET}/{DATASET}/dt={DAY}/")
    row = ledger.latest_attempt(ledger.connect(cfg.ledger_url), DATASET, DAY)
    assert (row["state"], row["rows_in"], row["rows_out"]) == ("exported", 3000, 3000)

    # Re-running extract in the same run changes nothing (no download, same summary).
    assert steps.extract(cfg, DATASET, DAY, run_id) == extracted


def test_a_changed_source_fails_the_extract_step_and_the_attempt(
    tmp_path, s3_endpoint, s3_client, cn_bucket, folder
):
    env = LocalEnv(tmp_path / "env", s3_endpoint)
    env.prepare()
    mirror = mirror_root(env.staging)
    s3 = S3Source(cn_bucket, lambda: _client(s3_endpoint), mirror, prefix=PREFIX)
    cfg = dataclasses.replace(env.settings(), source_root=mirror, source=s3)
    _upload(s3_client, cn_bucket, folder)
    steps.extract(cfg, DATASET, DAY, "run-1")
    s3_client.put_object(Bucket=cn_bucket, Key=_key("part-00000.parquet"), Body=b"not parquet")

    with pytest.raises(PartitionInvalid, match="changed since the partition was mirrored"):
        steps.extract(cfg, DATASET, DAY, "run-2")

    row = ledger.latest_attempt(ledger.connect(cfg.ledger_url), DATASET, DAY)
    assert row["state"] == "failed"
    assert row["error"].startswith("partition_invalid: dataset production_quality, day 2026-11-23")


# --- connection cn_source -----------------------------------------------------------------


def test_connection_cn_source_chooses_the_source(
    monkeypatch, tmp_path, s3_endpoint, s3_client, cn_bucket, folder
):
    from airflow.sdk import Connection

    from crossborder import airflow_glue
    from crossborder.airflow_glue import cn_source

    extra = {"bucket": cn_bucket, "prefix": PREFIX, "endpoint_url": s3_endpoint,
             "region_name": "us-east-1"}  # fmt: skip
    conn = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_CN_SOURCE", json.dumps(conn))
    aws = Connection(conn_id="cn_source", **{**conn, "extra": json.dumps(extra)})
    staging = tmp_path / "staging"

    root, source = cn_source(aws, staging)

    assert root == staging / "_source"
    assert isinstance(source, S3Source)
    assert (source.bucket, source.prefix, source.mirror_root) == (cn_bucket, PREFIX, root)
    assert not source.is_ready(DATASET, DAY)  # through the Amazon provider's S3Hook
    _upload(s3_client, cn_bucket, folder)
    assert source.is_ready(DATASET, DAY)

    # The settings every task gets, from connections and variables.
    monkeypatch.setenv("AIRFLOW_VAR_STAGING_ROOT", str(staging))
    monkeypatch.setenv("AIRFLOW_VAR_US_LANDING_BUCKET", "us-landing")
    ledger_conn = {"conn_type": "sqlite", "host": str(tmp_path / "ledger.db")}
    monkeypatch.setenv("AIRFLOW_CONN_EXPORT_LEDGER", json.dumps(ledger_conn))
    cfg = airflow_glue.settings()
    assert (cfg.source_root, cfg.source.bucket, cfg.source.prefix) == (root, cn_bucket, PREFIX)
    assert source_of(cfg).is_ready(DATASET, DAY)

    fs = Connection(conn_id="cn_source", conn_type="fs", extra=json.dumps({"path": "/data/sh"}))
    assert cn_source(fs, staging) == (Path("/data/sh"), None)
    no_bucket = Connection(conn_id="cn_source", conn_type="aws", extra="{}")
    with pytest.raises(ValueError, match="needs the bucket in its extra 'bucket'"):
        cn_source(no_bucket, staging)
