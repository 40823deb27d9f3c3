"""Failure alerts for on-call: dataset, Shanghai day, step, a plain one-line cause.

Attached to every task through ``default_args``. Each alert goes to the task log and
to the ledger as an event; the attempt is marked ``failed``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from crossborder.errors import CrossborderError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    dataset: str
    day: str
    step: str
    kind: str
    cause: str
    run_id: str

    def line(self) -> str:
        return (
            f"ALERT [{self.kind}] {self.dataset} {self.day} step {self.step}: {self.cause} "
            f"(run {self.run_id})"
        )


def describe(exc: BaseException | None, step: str, wait_description: str | None) -> tuple[str, str]:
    """(kind, cause) in plain words for an exception raised by a task."""
    if exc is None:
        return "task_failed", "the task failed without an error message"
    if isinstance(exc.__cause__, CrossborderError):  # unwrapped from a no-retry failure
        exc = exc.__cause__
    if type(exc).__name__ == "AirflowSensorTimeout":
        return "partition_late", f"the partition did not arrive in time: {wait_description}"
    if isinstance(exc, CrossborderError):
        return exc.kind, exc.detail
    return "task_failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def on_task_failure(context: dict[str, Any]) -> None:
    """Airflow task callback: build the alert, log it, record it in the ledger."""
    from crossborder import airflow_glue, ledger, steps

    dataset = context["dag"].dag_id.removeprefix("cn_export_")
    day = airflow_glue.run_day(context)
    step = context["task_instance"].task_id
    run_id = context["run_id"]
    settings = airflow_glue.settings()
    kind, cause = describe(
        context.get("exception"), step, steps.describe_wait(settings, dataset, day)
    )
    alert = Alert(dataset, day, step, kind, cause, run_id)
    log.error(alert.line())
    engine = ledger.connect(settings.ledger_url)
    attempt_id = ledger.begin_attempt(engine, dataset, day, run_id)
    ledger.record_event(engine, dataset, day, "alert", asdict(alert), attempt_id=attempt_id)
    ledger.update_attempt(engine, attempt_id, state="failed", error=f"{kind}: {cause}")
