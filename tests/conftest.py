"""Shared fixtures: a real S3 API on loopback, throw-away keys, small Parquet partitions.

Keys are generated at run time and never written to the repository.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from crossborder import crypto, landing, ledger
from crossborder.localenv import start_s3_server
from crossborder.manifest import build_manifest

# --- S3 on loopback ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server in a thread on 127.0.0.1 (in-memory, whole session)."""
    server, endpoint = start_s3_server()
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def us_bucket(s3_client) -> str:
    """A fresh, empty landing bucket for one test."""
    name = f"us-landing-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


# --- keys -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPairs:
    # repr=False: failing tests print fixtures, and keys have no business in logs.
    recipient_private: bytes = field(repr=False)
    recipient_public: bytes = field(repr=False)
    signing_private: bytes = field(repr=False)
    signing_public: bytes = field(repr=False)


@pytest.fixture(scope="session")
def keys() -> KeyPairs:
    """U.S. recipient RSA pair and CN manifest-signing Ed25519 pair, made for this run."""
    recipient_private, recipient_public = crypto.generate_recipient_keypair()
    signing_private, signing_public = crypto.generate_signing_keypair()
    return KeyPairs(recipient_private, recipient_public, signing_private, signing_public)


# --- Parquet partitions and the China-side export ---------------------------------------

DATASET = "vehicle_telemetry"
DAY = "2024-05-01"


def write_parquet(path: Path, rows: int, *, seed: int = 0, blob_bytes: int = 0) -> Path:
    """A small telemetry-like Parquet file; blob_bytes of random data per row make it big."""
    rng = random.Random(seed)
    table = pa.table(
        {
            "vehicle": [f"pseudo-{rng.getrandbits(64):016x}" for _ in range(rows)],
            "speed_kmh": [rng.uniform(0, 160) for _ in range(rows)],
            "soc_pct": [rng.randint(0, 100) for _ in range(rows)],
            "blob": [rng.randbytes(blob_bytes) for _ in range(rows)],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="NONE" if blob_bytes else "snappy")
    return path


@pytest.fixture
def make_partition(tmp_path: Path) -> Callable[..., list[Path]]:
    """make_partition(n, seed=0, rows=50) → n Parquet files part-00000.parquet, ..."""

    def make(n: int, *, seed: int = 0, rows: int = 50, name: str = "staging") -> list[Path]:
        folder = tmp_path / f"{name}-{seed}"
        return [
            write_parquet(folder / f"part-{i:05d}.parquet", rows + i, seed=seed * 1000 + i)
            for i in range(n)
        ]

    return make


def plan(files: list[Path], dataset: str = DATASET, day: str = DAY) -> dict[str, str]:
    """What prepare_partition is told: object key → SHA-256 of the staged plaintext."""
    return {
        landing.object_key(dataset, day, f.name): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in files
    }


@dataclass(frozen=True)
class Export:
    prepared: landing.PrepareResult
    records: list[dict]
    manifest: dict
    published: landing.PublishedManifest


@pytest.fixture
def export_partition(
    s3_client, us_bucket: str, keys: KeyPairs, tmp_path: Path
) -> Callable[..., Export]:
    """The China-side flow for one partition: prepare → upload each file → publish."""
    workdir = tmp_path / "encrypt-work"
    workdir.mkdir()

    def export(
        files: list[Path],
        *,
        dataset: str = DATASET,
        day: str = DAY,
        transfer: landing.TransferSettings | None = None,
        dag_run_id: str = "scheduled__2024-05-01",
        recipient_public: bytes | None = None,
    ) -> Export:
        recipient_public = recipient_public or keys.recipient_public
        planned = plan(files, dataset, day)
        prepared = landing.prepare_partition(
            s3_client, us_bucket, dataset, day, planned, crypto.key_id(recipient_public)
        )
        records = [
            landing.upload_encrypted(
                s3_client,
                us_bucket,
                key,
                f,
                recipient_public,
                workdir,
                transfer,
                expected_plaintext_sha256=planned[key],
            )
            for key, f in zip(planned, files, strict=True)
        ]
        rows = sum(r["rows"] for r in records)
        manifest = build_manifest(
            dataset=dataset,
            partition_date=day,
            route="cleared",
            policy_version="sha256:" + "ab" * 32,
            dag_run_id=dag_run_id,
            rows_in=rows,
            rows_out=rows,
            quality={f"{dataset}.anonymized": {"success": True, "evaluated": 12}},
            objects=records,
            encryption=crypto.encryption_info(recipient_public),
        )
        published = landing.publish_manifest(
            s3_client, us_bucket, dataset, day, manifest, keys.signing_private
        )
        return Export(prepared, records, manifest, published)

    return export


# --- the ledger on SQLite and on the local PostgreSQL ----------------------------------------

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def _postgres_url() -> tuple[sa.Engine, str, str]:
    """A throw-away database on the local PostgreSQL (admin engine, name, url)."""
    name = f"ledger_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
    return admin, name, PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    """A fresh export ledger, once on SQLite and once on PostgreSQL (dropped after)."""
    if request.param == "sqlite":
        yield ledger.connect(f"sqlite:///{tmp_path}/ledger.db")
        return
    admin, name, url = _postgres_url()
    engine = ledger.connect(url)
    yield engine
    engine.dispose()
    ledger.connect.cache_clear()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def precise_location(policy):
    """The policy with positions leaving at 0.001 degrees (~100 m): still precise location,
    so the subjects of rows with a position count as sensitive personal information."""
    columns = tuple(
        dataclasses.replace(c, options={**c.options, "grid_deg": 0.001})
        if c.transform == "generalize_location"
        else c
        for c in policy.columns
    )
    return dataclasses.replace(policy, columns=columns)


class CapturingChannels:
    """The test notifier: stands where Slack and SMTP stand and keeps what they would get."""

    def __init__(self, link: str = "") -> None:
        self.link, self.sent = link, []

    def task_link(self) -> str:
        return self.link

    def send(self, alert):
        self.sent.append(alert)
        return ["capture"]
