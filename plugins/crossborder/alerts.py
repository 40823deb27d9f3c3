"""Alerts for on-call: dataset, Shanghai day, step, a plain one-line cause, the runbook
entry and a link to the task in the Airflow UI.

Task failures reach ``on_task_failure`` through the notifier in ``default_args``; blocked
partitions, quality warnings, late partitions, reviews and overdue exports alert from
their step. Every alert is logged first (so it survives a broken configuration), then
recorded in the ledger as an event, then sent to the configured channels (Slack, SMTP:
``crossborder.notify``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from crossborder import ledger
from crossborder.errors import CrossborderError
from crossborder.ui import dataset_of

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
    "export_overdue",
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
    link: str = ""  # the task in the Airflow UI

    @property
    def runbook(self) -> str:
        return f"{RUNBOOK}#{self.kind}"

    @property
    def subject(self) -> str:
        return f"[{self.kind}] {self.dataset} {self.day}: {self.step}"

    def line(self) -> str:
        return (
            f"ALERT [{self.kind}] {self.dataset} {self.day} step {self.step}: {self.cause} "
            f"(run {self.run_id}; runbook {self.runbook}; task {self.link or 'n/a'})"
        )


class Channels(Protocol):
    """Where alerts go besides the log and the ledger (``crossborder.notify`` in Airflow)."""

    def task_link(self) -> str:
        """The running task in the Airflow UI, or "" outside a task."""
        ...

    def send(self, alert: Alert) -> list[str]:
        """Deliver the alert; the names of the channels it reached."""
        ...


def describe(exc: BaseException | None, wait_description: str) -> tuple[str, str]:
    """(kind, cause) in plain words for an exception raised by a task."""
    if exc is None:
        return "task_failed", "the task failed without an error message"
    if isinstance(exc.__cause__, CrossborderError):  # unwrapped from a no-retry failure
        exc = exc.__cause__
    if type(exc).__name__ == "AirflowSensorTimeout":
        return "partition_late", f"the partition did not arrive in time: {wait_description}"
    if isinstance(exc, CrossborderError):
        return exc.kind, _first_line(exc.detail)
    return "task_failed", f"{type(exc).__name__}: {_first_line(str(exc))}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def emit(
    alert: Alert,
    ledger_url: str | None,
    *,
    channels: Channels | None = None,
    fail_attempt: bool = False,
    existing_only: bool = False,
) -> Alert:
    """Log the alert, record it in the ledger (and mark the attempt failed), then send it
    to the channels. Returns the alert as sent (with the task's link).

    ``existing_only``: record it against the run's attempt only if there is one (a review
    run names the daily run it decides on; a wrong name must not create an attempt that
    would then be the day's latest).
    """
    if channels and not alert.link:
        alert = replace(alert, link=channels.task_link())
    log.error(alert.line())
    if ledger_url:
        _record(alert, ledger_url, fail_attempt=fail_attempt, existing_only=existing_only)
    if channels:
        try:
            reached = channels.send(alert)
            log.info("alert %s sent to %s", alert.kind, ", ".join(reached) or "no channel")
        except Exception:  # the alert is in the log and the ledger; say why a channel missed it
            log.exception("could not send the alert to every configured channel")
    return alert


def _record(alert: Alert, ledger_url: str, *, fail_attempt: bool, existing_only: bool) -> None:
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


def on_task_failure(context: dict[str, Any], channels: Channels | None = None) -> Alert:
    """One alert for a failed task (after its last retry); called by the DAGs' notifier."""
    from crossborder import airflow_glue
    from crossborder.source import source_of

    # An export run is one dataset's; a review run names its partition and the daily run it
    # decides on in its params. Other DAGs (receipts, reminders, deadlines) span datasets
    # and have no attempt of their own in the ledger.
    params = context.get("params") or {}
    dag_id = context["dag"].dag_id
    dataset = params.get("dataset") or dataset_of(dag_id) or ""
    run_id = params.get("export_run_id") or context["run_id"]
    day = airflow_glue.run_day(context)
    try:
        settings = airflow_glue.settings()
        ledger_url = settings.ledger_url if dataset else None
        wait = f"no _SUCCESS marker in {source_of(settings).location(dataset, day)}"
    except Exception as exc:  # a broken configuration must not swallow the alert
        ledger_url, wait = None, f"no _SUCCESS marker (configuration unreadable: {exc})"
    kind, cause = describe(context.get("exception"), wait)
    instance = context["task_instance"]
    alert = Alert(
        dataset or f"{dag_id} (all datasets)", day, instance.task_id, kind, cause, run_id,
        _log_url(instance),
    )  # fmt: skip
    existing_only = "export_run_id" in params
    return emit(
        alert, ledger_url, channels=channels, fail_attempt=True, existing_only=existing_only
    )


def _log_url(instance: Any) -> str:
    try:
        return instance.log_url
    except Exception:  # no API base URL configured: the alert goes out without a link
        return ""
