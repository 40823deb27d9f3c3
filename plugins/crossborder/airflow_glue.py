"""The only place that reads Airflow connections and variables for the steps.

Names are contracts (DESIGN.md): connections ``cn_source``, ``us_landing``,
``export_ledger``; variables ``staging_root``, ``us_landing_bucket``,
``us_recipient_public_key``, ``manifest_signing_key``, ``pseudonymization_key`` (CN side) and
``us_recipient_private_key``, ``cn_manifest_public_key``, ``us_lake_root`` (U.S. side).
Called inside tasks only, never at DAG parse time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossborder.errors import CrossborderError, KeyUnavailable
from crossborder.extract import partition_day
from crossborder.notify import ConnectionChannels
from crossborder.settings import ReceiverSettings, Settings

if TYPE_CHECKING:
    from crossborder.source import Source


def _variable(name: str, default: str | None = None) -> str | None:
    from airflow.sdk import Variable

    return Variable.get(name, default=default)


def _connection(conn_id: str) -> Any:
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id)


def _pem(name: str) -> bytes | None:
    value = _variable(name)
    return value.encode() if value else None


def _secret(name: str) -> bytes | None:
    """A secret variable, registered with Airflow's log masker before anyone can print it."""
    from airflow.sdk.log import mask_secret

    value = _variable(name)
    if not value:
        return None
    mask_secret(value, name)
    return value.encode()


def ledger_url(conn: Any) -> str:
    """SQLAlchemy URL of the ``export_ledger`` connection (sqlite or postgres)."""
    import sqlalchemy as sa

    explicit = conn.extra_dejson.get("sqlalchemy_url")
    if explicit:
        return explicit
    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    if conn.conn_type in ("postgres", "postgresql"):
        url = sa.URL.create(
            "postgresql+psycopg2",
            username=conn.login,
            password=conn.password or None,
            host=conn.host,
            port=conn.port,
            database=conn.schema,
        )
        return url.render_as_string(hide_password=False)
    raise ValueError(f"export_ledger: unsupported connection type {conn.conn_type!r}")


def s3_client_factory() -> Any:
    def make() -> Any:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id="us_landing").get_conn()

    return make


def cn_source(conn: Any, staging_root: Path) -> tuple[Path, Source | None]:
    """The Shanghai store from connection ``cn_source``: (source_root, source).

    - type ``fs`` (or any type but ``aws``), extra ``{"path": "/data/shanghai"}``: a folder
      read in place, ``{path}/{dataset}/dt=YYYY-MM-DD/part-NNNNN.parquet`` + ``_SUCCESS``.
    - type ``aws``, extra ``{"bucket": ..., "prefix": ..., "endpoint_url": ...,
      "region_name": ...}``, login/password = access key id/secret (as the Amazon provider
      reads them; ``prefix`` and ``endpoint_url`` optional): an S3-compatible store (MinIO
      in the compose deployment) with the same layout under ``s3://{bucket}/{prefix}/``.
      The sensor waits for the ``_SUCCESS`` object; ``extract`` mirrors the part objects
      into ``{staging_root}/_source/{dataset}/dt=YYYY-MM-DD/`` (idempotent, streamed,
      recording each object's key and ETag) and every later step reads the mirror. A
      source object that changes after it was mirrored is refused (partition_invalid):
      delete the day's mirror folder and clear ``extract`` to take a re-delivery. The
      credentials need s3:ListBucket and s3:GetObject only.
    """
    from crossborder.source import S3Source, mirror_root

    extra = conn.extra_dejson
    if conn.conn_type == "aws":
        if not extra.get("bucket"):
            raise ValueError("connection cn_source (aws) needs the bucket in its extra 'bucket'")

        def client() -> Any:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            return S3Hook(aws_conn_id="cn_source").get_conn()

        mirror = mirror_root(staging_root)
        source = S3Source(extra["bucket"], client, mirror, prefix=extra.get("prefix") or "")
        return mirror, source
    if not extra.get("path"):
        raise ValueError("connection cn_source needs the source folder in its extra 'path'")
    return Path(extra["path"]), None


def settings() -> Settings:
    staging_root = Path(_variable("staging_root"))
    source_root, source = cn_source(_connection("cn_source"), staging_root)
    return Settings(
        source_root=source_root,
        staging_root=staging_root,
        ledger_url=ledger_url(_connection("export_ledger")),
        us_bucket=_variable("us_landing_bucket"),
        s3_client=s3_client_factory(),
        recipient_public_pem=_pem("us_recipient_public_key"),
        signing_private_pem=_secret("manifest_signing_key"),
        pseudonymization_key=_secret("pseudonymization_key"),
        alert_channels=ConnectionChannels(),
        source=source,
    )


def receiver_settings() -> ReceiverSettings:
    private, public = _secret("us_recipient_private_key"), _pem("cn_manifest_public_key")
    if not private or not public:
        raise KeyUnavailable("us_recipient_private_key and cn_manifest_public_key must be set")
    return ReceiverSettings(
        us_bucket=_variable("us_landing_bucket"),
        s3_client=s3_client_factory(),
        lake_root=Path(_variable("us_lake_root")),
        recipient_private_pem=private,
        signing_public_pem=public,
    )


def call_failing_fast(func: Callable[..., Any], *args: Any) -> Any:
    """Call a step; a typed error that retrying cannot fix fails the task without retries.

    The original error stays attached (``__cause__``) for the failure alert.
    """
    from airflow.sdk.exceptions import AirflowFailException

    try:
        return func(*args)
    except CrossborderError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(str(exc)) from exc


def run_day(context: dict[str, Any]) -> str:
    """The Shanghai day a run exports: ``params.partition_date`` if given, else derived.

    Runs triggered without a logical date (allowed in Airflow 3) use their ``run_after``.
    """
    override = (context.get("params") or {}).get("partition_date")
    if override:
        return date.fromisoformat(override).isoformat()
    when = context.get("logical_date") or context["dag_run"].run_after
    return partition_day(when).isoformat()
