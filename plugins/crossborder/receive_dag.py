"""The U.S. receive DAG and the China-side receipt reconciliation DAG.

Imported at DAG parse time: only ``airflow.sdk`` and ``pendulum`` at module level.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, dag, task

START = pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai")


def _receive_dag() -> DAG:
    @dag(
        dag_id="us_receive",
        description="U.S. side: verify, decrypt and land exported partitions; write receipts",
        doc_md=__doc__,
        schedule=timedelta(hours=1),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args={"owner": "us-data-platform", "retries": 2},
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
            receipt = receive.receive_partition(
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


def _reconcile_dag() -> DAG:
    @dag(
        dag_id="cn_reconcile_receipts",
        description="China side: mark exported partitions received when the U.S. receipt matches",
        schedule=timedelta(hours=1),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args={"owner": "data-platform", "retries": 2},
        tags=["cn-export"],
    )
    def cn_reconcile_receipts() -> None:
        @task
        def reconcile() -> list[dict[str, Any]]:
            """Read each exported partition's receipt and record it in the ledger."""
            from crossborder import airflow_glue, steps

            return steps.reconcile_receipts(airflow_glue.settings())

        reconcile()

    return cn_reconcile_receipts()


def build_receive_dags() -> dict[str, DAG]:
    return {"us_receive": _receive_dag(), "cn_reconcile_receipts": _reconcile_dag()}
