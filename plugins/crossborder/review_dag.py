"""Builds ``cn_cac_review``: one run per partition awaiting CAC review, and the reminders.

Imported at DAG parse time: only Airflow, the HITL operator and the small review
configuration reader at module level. The daily export run hands a ``cac_review``
partition over (conf: dataset, partition_date, export_run_id) and ends green; this run
opens two Human-in-the-Loop gates in the Airflow UI (Browse → Required Actions). Waiting
holds no worker. Only after both gates approve does the partition take the same
encrypt / upload / manifest path as a cleared one, with the approvals in the manifest.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import DAG, Param, dag, task
from airflow.sdk.bases.notifier import BaseNotifier

from crossborder.export_dag import DEFAULT_ARGS, START, _base_url, _call
from crossborder.review import APPROVE, REJECT, ReviewConfig, load_config
from crossborder.ui import REVIEW_DAG_ID

CASE = "{{ ti.xcom_pull(task_ids='open_review')"


class ReviewNotifier(BaseNotifier):
    """Tells the approvers that a gate is open, with the link to answer it in the UI."""

    def notify(self, context: Any) -> None:
        from crossborder.airflow_glue import settings
        from crossborder.alerts import Alert, emit

        case = context["ti"].xcom_pull(task_ids="open_review")
        link = HITLOperator.generate_link_to_ui_from_context(context=context, base_url=_base_url())
        cause = f"{case['subject']}: approve or reject at {link}"
        # Recorded against the daily run's attempt: the one the review decides on.
        alert = Alert(case["dataset"], case["day"], context["ti"].task_id, "review_gate_open",
                      cause, case["export_run_id"], link)  # fmt: skip
        found = settings()
        emit(alert, found.ledger_url, channels=found.alert_channels, existing_only=True)


class ReviewGate(HITLOperator):
    """A gate for the configured approvers minus the run's trigger and whoever answered an
    earlier gate: Airflow itself refuses them (403), so four eyes hold in the UI too."""

    def __init__(
        self, *, approvers: list[dict[str, str]], earlier_gates: tuple[str, ...] = (), **kwargs: Any
    ) -> None:
        super().__init__(assigned_users=list(approvers), **kwargs)
        self.approvers = list(approvers)
        self.earlier_gates = earlier_gates

    def execute(self, context: Any) -> Any:
        excluded = {context["dag_run"].triggering_user_name}
        for gate in self.earlier_gates:
            answer = context["ti"].xcom_pull(task_ids=gate) or {}
            user = answer.get("responded_by_user") or {}
            excluded |= {user.get("id"), user.get("name")}
        self.assigned_users = [
            a for a in self.approvers if a["id"] not in excluded and a["name"] not in excluded
        ]
        if not self.assigned_users:  # an empty list would let anyone answer
            raise ValueError("no configured approver is left to answer this gate")
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """Record the answer in the ledger straight from Airflow's event: the judgement
        reads it there, never from XCom."""
        answer = super().execute_complete(context, event)
        params = context["params"]
        _call(
            "record_answer",
            params["dataset"],
            params["partition_date"],
            params["export_run_id"],
            context["run_id"],
            self.task_id,
            dict(answer),
        )
        return answer

    def validate_params_input(self, params_input: Any) -> None:
        """A malformed reference is judged (a refused approval, with the reason recorded)
        by ``judge_gates``, not turned into a failed task: the answer is passed on as given."""
        from airflow.sdk.exceptions import ParamValidationError

        with contextlib.suppress(ParamValidationError):
            super().validate_params_input(params_input)


def _gate(task_id: str, config: ReviewConfig, earlier: tuple[str, ...] = ()) -> ReviewGate:
    return ReviewGate(
        task_id=task_id,
        subject=f"{CASE}['subject'] }}}}",
        body=f"{CASE}['body'] }}}}",
        options=[APPROVE, REJECT],
        defaults=[REJECT],  # what a timeout answers: time never approves
        response_timeout=config.response_timeout,
        params={
            # Empty until the approver answers (a task's params must validate when it
            # starts); the form checks the format, and judge_gates refuses an approval
            # without a reference.
            "cac_reference": Param(
                None,
                type=["null", "string"],
                pattern=config.reference_pattern,
                title="CAC reference (required to approve)",
                description="The CAC security-assessment or filing reference, e.g. "
                "CAC-SA-2026-000123",
            ),
            "reason": Param(None, type=["null", "string"], title="Reason (when rejecting)"),
        },
        approvers=list(config.approvers),
        earlier_gates=earlier,
        notifiers=[ReviewNotifier()],
        retries=0,
    )


def build_review_dag() -> DAG:
    config = load_config()

    @dag(
        dag_id=REVIEW_DAG_ID,
        is_paused_upon_creation=False,  # a hand-over must not wait on someone unpausing
        description="CAC review: two approvers record the CAC reference before an export",
        doc_md=__doc__,
        schedule=None,
        start_date=START,
        catchup=False,
        default_args=DEFAULT_ARGS,
        tags=["cn-export", "cac-review"],
        params={
            "dataset": Param(type="string", description="dataset awaiting review"),
            "partition_date": Param(type="string", format="date", description="Shanghai day"),
            "export_run_id": Param(type="string", description="the daily run that handed over"),
        },
    )
    def cn_cac_review() -> None:
        @task
        def open_review(**context: Any) -> dict[str, Any]:
            """Read the hand-over from the ledger: what would leave, why review is needed."""
            params, run = context["params"], context["dag_run"]
            return _call(
                "open_review",
                params["dataset"],
                params["partition_date"],
                params["export_run_id"],
                context["run_id"],
                run.triggering_user_name,
            )

        def _judge(gates: list[str], context: Any) -> dict[str, Any]:
            params = context["params"]
            return _call(
                "judge_gates",
                params["dataset"],
                params["partition_date"],
                params["export_run_id"],
                context["run_id"],
                gates,
            )

        @task.short_circuit
        def judge_first(**context: Any) -> bool:
            """Go on only if the first approver approved with a valid CAC reference."""
            return not _judge(["first_approval"], context)["rejected"]

        @task.short_circuit
        def judge_second(**context: Any) -> bool:
            """Go on only with two valid approvals by different approvers (recorded)."""
            return _judge(["first_approval", "second_approval"], context)["approved"]

        @task
        def plan_upload(case: dict[str, Any]) -> list[dict[str, Any]]:
            """Prepare the U.S. prefix; refused unless the ledger holds the approvals."""
            return _call("plan_upload", case["staged"], case["decision"])

        @task(max_active_tis_per_dagrun=2)
        def upload_part(part: dict[str, Any]) -> dict[str, Any]:
            """Encrypt one file for the U.S. recipient and upload it with checksums."""
            return _call("upload_part", part)

        @task
        def publish_manifest(case: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, Any]:
            """Write the signed manifest, approvals included, last."""
            return _call(
                "publish",
                case["dataset"],
                case["day"],
                case["export_run_id"],
                list(objects),
                case["quality"],
                case["staged"],
                case["verification"],
                case["decision"],
                {"rows": case["rows_in"]},
            )

        case = open_review()
        first_gate = _gate("first_approval", config)
        second_gate = _gate("second_approval", config, earlier=("first_approval",))
        case >> first_gate >> judge_first() >> second_gate
        approved = judge_second()
        second_gate >> approved
        parts = plan_upload(case)
        approved >> parts
        publish_manifest(case, upload_part.expand(part=parts))

    return cn_cac_review()


def build_reminder_dag() -> DAG:
    @dag(
        dag_id="cn_cac_review_reminders",
        is_paused_upon_creation=False,
        description="Remind approvers of CAC reviews still open after the configured time",
        schedule=timedelta(hours=1),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["cn-export", "cac-review"],
    )
    def cn_cac_review_reminders() -> None:
        @task
        def remind() -> list[dict[str, Any]]:
            """Alert once per period for every review still waiting for its approvers."""
            return _call("remind_open_reviews", _base_url())

        remind()

    return cn_cac_review_reminders()
