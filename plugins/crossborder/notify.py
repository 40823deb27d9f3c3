"""Airflow's side of the alerts: the task-failure notifier and the Slack/SMTP channels.

Channels are switched on by connection, nothing else:

- ``crossborder_slack`` (conn type ``slackwebhook``; the webhook URL or token as password);
- ``crossborder_smtp`` (conn type ``smtp``; ``from_email`` and ``to``, comma-separated,
  in its extra).

A missing connection means that channel is off. The task log and the ledger event are
always written (``alerts.emit``). Imported at DAG parse time (``default_args``): only
``airflow.sdk`` at module level; the providers are imported when an alert is sent.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier

from crossborder import alerts

log = logging.getLogger(__name__)
SLACK_CONN_ID = "crossborder_slack"
SMTP_CONN_ID = "crossborder_smtp"


class OnCallNotifier(BaseNotifier):
    """Task failure callback (through ``default_args``): one alert per failed task, after
    its last retry. ``channels`` replaces Slack/SMTP (the tests capture alerts with it)."""

    def __init__(self, channels: alerts.Channels | None = None) -> None:
        super().__init__()
        self.channels = channels

    def notify(self, context: Any) -> None:
        alerts.on_task_failure(context, self.channels or ConnectionChannels())


class ConnectionChannels:
    """The channels whose connection exists, found when an alert is sent."""

    def task_link(self) -> str:
        from airflow.sdk import get_current_context

        try:
            return get_current_context()["ti"].log_url
        except Exception:  # outside a running task there is no task to link to
            return ""

    def send(self, alert: alerts.Alert) -> list[str]:
        reached = []
        for name, conn_id, deliver in (
            ("slack", SLACK_CONN_ID, _to_slack),
            ("smtp", SMTP_CONN_ID, _by_email),
        ):
            conn = _connection(conn_id)
            if conn is None:
                continue
            try:
                deliver(alert, conn)
                reached.append(name)
            except Exception:  # one broken channel must not silence the others
                log.exception("alert %s not delivered to %s (%s)", alert.kind, name, conn_id)
        return reached


def _connection(conn_id: str) -> Any:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def text(alert: alerts.Alert) -> str:
    """The alert as plain text: what on-call reads first, one fact per line."""
    return "\n".join(
        [
            f"{alert.kind}: {alert.dataset}, Shanghai day {alert.day}, step {alert.step}",
            alert.cause,
            f"Runbook: {alert.runbook}",
            f"Task: {alert.link or 'n/a'} (run {alert.run_id})",
        ]
    )


def _to_slack(alert: alerts.Alert, conn: Any) -> None:
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    notifier = SlackWebhookNotifier(slack_webhook_conn_id=conn.conn_id, text=text(alert))
    notifier.notify({})  # called directly: the text is final, not a template


def _by_email(alert: alerts.Alert, conn: Any) -> None:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    to = [a.strip() for a in str(conn.extra_dejson.get("to", "")).split(",") if a.strip()]
    if not to:
        raise ValueError(f"connection {conn.conn_id} has no recipients in its extra 'to'")
    body = "<br>".join(html.escape(line) for line in text(alert).splitlines())
    notifier = SmtpNotifier(
        to=to, subject=alert.subject, html_content=body, smtp_conn_id=conn.conn_id
    )
    notifier.notify({})
