"""The U.S. receive DAG. Imported at DAG parse time: only ``airflow.sdk`` and ``pendulum``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, dag, task

from crossborder.notify import OnCallNotifier

START = pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai")


def build_receive_dag() -> DAG:
    @dag(
        dag_id="us_receive",
        description="U.S. side: verify, decrypt and land exported partitions; write receipts",
        doc_md="""
### Receive exported partitions (U.S. side)

For every partition in the landing bucket whose `manifest.json` has no matching
`receipt.json`: verify the Ed25519 signature, check every object's size and SHA-256,
decrypt with the recipient's private key, check the plaintext SHA-256, land the Parquet
files in the lake (all or nothing) and write the receipt the China side reconciles.
""",
        schedule=timedelta(hours=1),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args={
            "owner": "us-data-platform",
            "retries": 2,
            "on_failure_callback": [OnCallNotifier()],
        },
        tags=["us-receive"],
    )
    def us_receive() -> None:
        @task
        def find_pending() -> list[dict[str, str]]:
            """Partitions in the landing bucket with a manifest but no receipt for it."""
            from crossborder import airflow_glue, receive

            cfg = airflow_glue.receiver_settings()
            pending = receive.pending_partitions(cfg.s3_client(), cfg.us_bucket)
            return [{"dataset": d, "day": day} for d, day in pending]

        @task(max_active_tis_per_dagrun=2)
        def receive_partition(partition: dict[str, str]) -> dict[str, Any]:
            """Verify signature and checksums, decrypt, land in the lake, write the receipt."""
            from crossborder import airflow_glue, receive

            cfg = airflow_glue.receiver_settings()
            receipt = airflow_glue.call_failing_fast(
                receive.receive_partition,
                cfg.s3_client(),
                cfg.us_bucket,
                partition["dataset"],
                partition["day"],
                cfg.lake_root,
                cfg.recipient_private_pem,
                cfg.signing_public_pem,
            )
            return receipt.to_dict()

        receive_partition.expand(partition=find_pending())

    return us_receive()
