"""Load one synthetic Shanghai day into the Shanghai source store (compose profile ``demo``).

    docker compose -f docker/docker-compose.yaml --profile demo run --rm demo-loader
    DEMO_DATE=2026-11-23 docker compose -f docker/docker-compose.yaml --profile demo \
        run --rm demo-loader

Generates the day with ``crossborder.synthetic`` (deterministic for a seed) into a
temporary folder, then uploads each dataset's partition in the source layout
``s3://{bucket}/{dataset}/dt=YYYY-MM-DD/part-NNNNN.parquet`` with ``_SUCCESS`` last, so
the export DAG's sensor never sees a half-loaded day. A partition whose ``_SUCCESS`` is
already in the store is left alone (a complete Shanghai partition never changes).

Credentials: the files named by ``--user-file`` / ``--password-file`` (the store's root
user, as the Shanghai systems that write the store would have; Airflow itself only reads).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

SUCCESS = "_SUCCESS"


def yesterday_in_shanghai() -> date:
    return datetime.now(ZoneInfo("Asia/Shanghai")).date() - timedelta(days=1)


def _day(text: str) -> date:
    return date.fromisoformat(text) if text else yesterday_in_shanghai()


def upload_partition(s3: Any, bucket: str, folder: Path, prefix: str) -> str:
    """Upload ``folder``'s files under ``prefix``, ``_SUCCESS`` last; what was done."""
    marker = f"{prefix}/{SUCCESS}"
    found = s3.list_objects_v2(Bucket=bucket, Prefix=marker, MaxKeys=1).get("KeyCount", 0)
    if found:
        return "already complete, left alone"
    parts = sorted(
        p for p in folder.iterdir() if p.is_file() and p.name != SUCCESS and p.name[0] != "."
    )
    for part in parts:
        s3.upload_file(str(part), bucket, f"{prefix}/{part.name}")
    s3.put_object(Bucket=bucket, Key=marker, Body=b"")
    return f"{len(parts)} files uploaded"


def main(argv: list[str] | None = None) -> int:
    from crossborder import synthetic

    parser = argparse.ArgumentParser(prog="load_demo_data.py", description=__doc__.splitlines()[0])
    parser.add_argument("--date", type=_day, default="", help="Shanghai day (default: yesterday)")
    parser.add_argument("--datasets", nargs="+", choices=synthetic.DATASETS)
    parser.add_argument("--rows", type=int, help="rows per dataset (default: the generator's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--user-file", type=Path, default=Path("/run/secrets/minio_cn_root_user"))
    parser.add_argument(
        "--password-file", type=Path, default=Path("/run/secrets/minio_cn_root_password")
    )
    args = parser.parse_args(argv)

    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=args.endpoint_url,
        region_name=args.region,
        aws_access_key_id=args.user_file.read_text().strip(),
        aws_secret_access_key=args.password_file.read_text().strip(),
    )
    with tempfile.TemporaryDirectory(prefix="shanghai-day-") as root:
        summaries = synthetic.generate_day(
            root, args.date, args.datasets, rows=args.rows, seed=args.seed
        )
        for summary in summaries:
            folder = Path(summary.path)
            prefix = folder.relative_to(root).as_posix()
            done = upload_partition(s3, args.bucket, folder, prefix)
            print(f"s3://{args.bucket}/{prefix}/ ({summary.rows} rows): {done}")
    print(f"Shanghai day {args.date.isoformat()} loaded; trigger the exports with")
    print(f'  {{"partition_date": "{args.date.isoformat()}"}}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
