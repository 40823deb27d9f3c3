"""Alerts for on-call: dataset, Shanghai day, step, and a plain one-line cause.

Task failures reach ``on_task_failure`` through ``default_args``; blocked partitions
alert from their step. Every alert is logged first (so it survives a broken
configuration), then recorded in the ledger as an event.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from crossborder import ledger
from crossborder.errors import CrossborderError
from crossborder.extract import partition_path

log = logging.getLogger(__name__)
UNSETTLED = ("in_progress", "awaiting_review", "failed")
RUNBOOK = "docs/runbook.md"
# Alert kinds that are not an error type (each error's kind is its own); every kind has
# an entry in the runbook.
EVENT_KINDS = (
    "partition_late",
    "quality_warning",
    "partition_blocked",
    "review_required",
    "review_gate_open",
    "review_reminder",
    "review_rejected",
    "review_timeout",
    "task_failed",
)


@dataclass(frozen=True)
class Alert:
    dataset: str
    day: str
    step: str
    kind: str
    cause: str
    run_id: str

    @property
    def runbook(self) -> str:
        return f"{RUNBOOK}#{self.kind}"

    def line(self) -> str:
        return (
            f"ALERT [{self.kind}] {self.dataset} {self.day} step {self.step}: {self.cause} "
            f"(run {self.run_id}; runbook {self.runbook})"
        )


def describe(exc: BaseException | None, wait_description: str) -> tuple[str, str]:
    """(kind, cause) in plain words for an exception raised by a task."""
    if exc is None:
        return "task_failed", "the task failed without an error message"
    if isinstance(exc.__cause__, CrossborderError):  # unwrapped from a no-retry failure
        exc = exc.__cause__
    if type(exc).__name__ == "AirflowSensorTimeout":
        return "partition_late", f"the partition did not arrive in time: {wait_description}"
    if isinstance(exc, CrossborderError):
        return exc.kind, exc.detail
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    return "task_failed", f"{type(exc).__name__}: {first_line}"


def emit(
    alert: Alert,
    ledger_url: str | None,
    *,
    fail_attempt: bool = False,
    existing_only: bool = False,
) -> None:
    """Log the alert, then record it in the ledger (and mark the attempt failed).

    ``existing_only``: record it against the run's attempt only if there is one (a review
    run names the daily run it decides on; a wrong name must not create an attempt that
    would then be the day's latest).
    """
    log.error(alert.line())
    if not ledger_url:
        return
    try:
        engine = ledger.connect(ledger_url)
        if existing_only:
            attempt_id = ledger.find_attempt(engine, alert.dataset, alert.day, alert.run_id)
        else:
            attempt_id = ledger.begin_attempt(engine, alert.dataset, alert.day, alert.run_id)
        detail = {**asdict(alert), "runbook": alert.runbook}
        ledger.record_event(engine, alert.dataset, alert.day, "alert", detail, attempt_id)
        if attempt_id is None:
            return
        # A settled outcome (exported, received, blocked, rejected) is never overwritten:
        # e.g. a review run opened for a partition that has already left.
        if fail_attempt and ledger.get_attempt(engine, attempt_id)["state"] in UNSETTLED:
            error = f"{alert.kind}: {alert.cause}"
            ledger.update_attempt(engine, attempt_id, state="failed", error=error)
    except Exception:  # the alert is already in the log; say why the ledger missed it
        log.exception("could not record the alert in the export ledger")


def on_task_failure(context: dict[str, Any]) -> None:
    """Airflow task callback for the export DAGs."""
    from crossborder import airflow_glue

    # A review run names its partition and the daily run it decides on in its params.
    params = context.get("params") or {}
    dataset = params.get("dataset") or context["dag"].dag_id.removeprefix("cn_export_")
    run_id = params.get("export_run_id") or context["run_id"]
    day = airflow_glue.run_day(context)
    try:
        settings = airflow_glue.settings()
        ledger_url = settings.ledger_url
        wait = f"no _SUCCESS marker in {partition_path(settings.source_root, dataset, day)}"
    except Exception as exc:  # a broken configuration must not swallow the alert
        ledger_url, wait = None, f"no _SUCCESS marker (configuration unreadable: {exc})"
    kind, cause = describe(context.get("exception"), wait)
    step = context["task_instance"].task_id
    alert = Alert(dataset, day, step, kind, cause, run_id)
    emit(alert, ledger_url, fail_attempt=True, existing_only="export_run_id" in params)
