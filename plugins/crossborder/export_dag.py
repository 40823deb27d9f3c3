"""Builds one ``cn_export_<dataset>`` DAG per policy file; the DAG file only calls this.

Imported at DAG parse time: only ``airflow.sdk``, ``pendulum`` and the small policy
reader may be imported at module level here. Every task body imports what it needs.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, BaseOperatorLink, Param, dag, task
from airflow.sdk.bases.sensor import PokeReturnValue

from crossborder.notify import OnCallNotifier
from crossborder.policy import parse_duration, policy_files, read_schedule
from crossborder.ui import REVIEW_DAG_ID, REVIEW_RUN_PREFIX, dataset_of, export_dag_id

SHANGHAI = "Asia/Shanghai"
START = pendulum.datetime(2026, 1, 1, tz=SHANGHAI)


DEFAULT_ARGS: dict[str, Any] = {
    "owner": "data-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    # One alert per failed task, after its last retry: log, ledger, Slack/SMTP.
    "on_failure_callback": [OnCallNotifier()],
}


class QualityReportLink(BaseOperatorLink):
    """The validate task's link to this run's quality report (Data Docs)."""

    name = "Quality report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from crossborder.reports import report_url

        return report_url(dataset_of(ti_key.dag_id) or ti_key.dag_id, ti_key.run_id)


def _call(step: str, *args: Any) -> Any:
    """Run ``crossborder.steps.<step>`` with the task's settings, failing fast on bad data."""
    from crossborder import steps
    from crossborder.airflow_glue import call_failing_fast, settings

    return call_failing_fast(getattr(steps, step), settings(), *args)


def _base_url() -> str:
    """The Airflow UI's address, for links in alerts."""
    from airflow.sdk.configuration import conf

    return conf.get("api", "base_url", fallback=None) or "http://localhost:8080"


def _day(context: dict[str, Any]) -> str:
    from crossborder.airflow_glue import run_day

    return run_day(context)


def build_export_dag(policy_file: Path) -> DAG:
    info = read_schedule(policy_file)
    dataset = info["dataset"]
    # The run starts when the partition is expected, so a late one alerts before the
    # export is due (export_time); a partition already there is exported at once.
    hour, minute = info["expected_by"].split(":")

    @dag(
        dag_id=export_dag_id(dataset),
        description=f"Export {dataset} from Shanghai to U.S. storage",
        doc_md=_doc(dataset, info),
        schedule=f"{int(minute)} {int(hour)} * * *",
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["cn-export", dataset, info["status"]],
        params={
            "partition_date": Param(
                None,
                type=["null", "string"],
                format="date",
                description="Shanghai day to export (YYYY-MM-DD); default: the day before "
                "the run's logical date, in Shanghai time.",
            )
        },
    )
    def export() -> None:
        @task.sensor(
            mode="reschedule",
            poke_interval=parse_duration(info.get("poke_interval", "5m")),
            timeout=parse_duration(info.get("wait_timeout", "6h")),
            retries=0,
        )
        def wait_for_partition(**context: Any) -> PokeReturnValue:
            """Wait for the day's `_SUCCESS` marker in the Shanghai store."""
            day = _day(context)
            ready = _call("partition_ready", dataset, day, context["run_id"], info["expected_by"])
            return PokeReturnValue(ready, day)

        @task
        def extract(day: str, **context: Any) -> dict[str, Any]:
            """List the partition's files with size, SHA-256 and row count."""
            return _call("extract", dataset, day, context["run_id"])

        @task
        def validate(extracted: dict[str, Any], **context: Any) -> dict[str, Any]:
            """Run the dataset's Great Expectations suite on every file."""
            return _call("validate", extracted, context["run_id"])

        @task
        def anonymize(
            extracted: dict[str, Any], quality: dict[str, Any], **context: Any
        ) -> dict[str, Any]:
            """Stage the policy's allow-listed, pseudonymized and generalized view in China."""
            return _call("anonymize", extracted, context["run_id"])

        @task
        def verify_anonymization(staged: dict[str, Any], **context: Any) -> dict[str, Any]:
            """Prove it held: anonymized suite, PII scan, k-anonymity, sensitive areas."""
            return _call("verify", staged, context["run_id"])

        @task
        def classify(
            day: str,
            quality: dict[str, Any],
            staged: dict[str, Any],
            verification: dict[str, Any],
            **context: Any,
        ) -> dict[str, Any]:
            """Decide the route: cleared, cac_review or blocked, with the rules applied."""
            return _call("decide", dataset, day, context["run_id"], quality, staged, verification)

        @task.branch
        def route(decision: dict[str, Any]) -> str:
            """Send cleared partitions to upload; everything else is recorded and stops."""
            return "plan_upload" if decision["route"] == "cleared" else "record_held"

        @task
        def record_held(
            day: str,
            decision: dict[str, Any],
            extracted: dict[str, Any],
            quality: dict[str, Any],
            staged: dict[str, Any],
            verification: dict[str, Any],
            **context: Any,
        ) -> dict[str, Any]:
            """Record a blocked partition, or hand one over for CAC review; nothing leaves."""
            handover = {
                "extracted": extracted,
                "quality": quality,
                "staged": staged,
                "verification": verification,
            }
            return _call("record_held", dataset, day, context["run_id"], decision, handover)

        @task.short_circuit
        def needs_review(held: dict[str, Any]) -> bool:
            """Only partitions routed cac_review go on to a review run."""
            return held["route"] == "cac_review"

        hand_over = TriggerDagRunOperator(
            task_id="hand_over_for_review",
            trigger_dag_id=REVIEW_DAG_ID,
            trigger_run_id=REVIEW_RUN_PREFIX + "{{ run_id }}",
            conf={
                "dataset": dataset,
                "partition_date": "{{ ti.xcom_pull(task_ids='record_held')['day'] }}",
                "export_run_id": "{{ run_id }}",
            },
            skip_when_already_exists=True,  # re-running the task starts no second review
        )

        @task
        def plan_upload(staged: dict[str, Any], decision: dict[str, Any]) -> list[dict[str, Any]]:
            """Prepare the U.S. prefix and list the files to upload, one mapped task each."""
            return _call("plan_upload", staged, decision)

        @task(max_active_tis_per_dagrun=2)
        def upload_part(part: dict[str, Any]) -> dict[str, Any]:
            """Encrypt one file for the U.S. recipient and upload it with checksums."""
            return _call("upload_part", part)

        @task
        def publish_manifest(
            day: str,
            objects: list[dict[str, Any]],
            quality: dict[str, Any],
            staged: dict[str, Any],
            verification: dict[str, Any],
            decision: dict[str, Any],
            extracted: dict[str, Any],
            **context: Any,
        ) -> dict[str, Any]:
            """Write the signed manifest last: the commit marker of the export."""
            return _call(
                "publish",
                dataset,
                day,
                context["run_id"],
                list(objects),
                quality,
                staged,
                verification,
                decision,
                extracted,
            )

        day = wait_for_partition()
        extracted = extract(day)
        quality = validate(extracted)
        quality.operator.operator_extra_links = [QualityReportLink()]
        staged = anonymize(extracted, quality)
        verification = verify_anonymization(staged)
        decision = classify(day, quality, staged, verification)
        branch = route(decision)
        parts = plan_upload(staged, decision)
        uploaded = upload_part.expand(part=parts)
        held = record_held(day, decision, extracted, quality, staged, verification)
        branch >> [parts, held]
        needs_review(held) >> hand_over
        publish_manifest(day, uploaded, quality, staged, verification, decision, extracted)

    return export()


def _doc(dataset: str, info: dict[str, Any]) -> str:
    return f"""
### Export `{dataset}` to U.S. storage

{info["description"]}

Policy status: **{info["status"]}** (a draft policy fails closed: the partition is blocked).

Runs daily at {info["expected_by"]} Shanghai time, when the partition should be complete
(on-call is alerted at once if it is not), and exports the **previous Shanghai day**,
due by {info["export_time"]}
(or `partition_date` when triggered with that parameter). Steps: wait for `_SUCCESS` →
extract → quality suite → anonymize → verify anonymization (second suite, PII scan,
k-anonymity, sensitive areas) → classify → `cleared`: encrypt + upload each file, then
publish the signed manifest; `cac_review`: record, alert and hand over to a
`cn_cac_review` run (this run ends green); `blocked`: record and alert.

Every task is idempotent: clear any task (or the whole run) to re-run it safely.
"""


def build_reconcile_dag() -> DAG:
    @dag(
        dag_id="cn_reconcile_receipts",
        description="Mark exported partitions received when the U.S. receipt matches",
        schedule=timedelta(hours=1),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["cn-export"],
    )
    def cn_reconcile_receipts() -> None:
        @task
        def reconcile() -> list[dict[str, Any]]:
            """Read each exported partition's receipt and record it in the ledger."""
            return _call("reconcile_receipts")

        reconcile()

    return cn_reconcile_receipts()


def build_deadline_dag() -> DAG:
    @dag(
        dag_id="cn_deadlines",
        is_paused_upon_creation=False,  # a safety net: on from the start, like the reminders
        description="Alert when a day's export is not finished by its policy's export_time",
        doc_md="""
### Export deadlines

Every 15 minutes: for each active policy, is the latest Shanghai day whose export is due
(the policy's `export_time`, Shanghai time, the next morning) exported? If not (no run,
still running, or failed), on-call gets one `export_overdue` alert per dataset and day
(runbook `docs/runbook.md#export_overdue`). Days held for CAC review, blocked or
rejected are not late: they have alerted already.
""",
        schedule="*/15 * * * *",
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["cn-export"],
    )
    def cn_deadlines() -> None:
        @task
        def check_deadlines() -> list[dict[str, Any]]:
            """One alert per dataset and day whose export is overdue."""
            return _call("check_export_deadlines", _base_url())

        check_deadlines()

    return cn_deadlines()


def build_all() -> dict[str, DAG]:
    """Every China-side DAG: one export DAG per policy file, receipt reconciliation and the
    export deadlines."""
    dags = {export_dag_id(p.stem): build_export_dag(p) for p in policy_files()}
    return {
        **dags,
        "cn_reconcile_receipts": build_reconcile_dag(),
        "cn_deadlines": build_deadline_dag(),
    }
