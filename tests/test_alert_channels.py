"""Alerts reach Slack and e-mail through Airflow's notifiers, once per failure.

Real Airflow runs (`airflow dags test`) with the two channel connections pointing at
stand-ins on loopback: an SMTP server (aiosmtpd) and an HTTP server taking Slack
incoming-webhook posts. Each message must name the dataset, the Shanghai day, the step,
the cause in plain words, the runbook entry and the link to the task in the UI.
"""

from __future__ import annotations

import email
import json
import threading
from datetime import date, timedelta
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiosmtpd.controller import Controller
from review_runs import airflow_env

from crossborder import ledger, synthetic
from crossborder.localenv import LocalEnv, airflow, free_port

pytestmark = pytest.mark.airflow

DAY = date(2026, 11, 20)
UI = "http://127.0.0.1:8080"  # only used to build links; nothing listens there


class Mailbox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


class SlackWebhook(BaseHTTPRequestHandler):
    posts: ClassVar[list[dict]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts.append({"path": self.path, **json.loads(body)})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture(scope="module")
def channels():
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    slack = ThreadingHTTPServer(("127.0.0.1", 0), SlackWebhook)
    threading.Thread(target=slack.serve_forever, daemon=True).start()
    conns = {
        "AIRFLOW_CONN_CROSSBORDER_SMTP": {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": smtp.port,
            "extra": {
                "from_email": "airflow@crossborder.test",
                "to": "oncall@crossborder.test, compliance@crossborder.test",
                "disable_ssl": True,
                "disable_tls": True,
                "retry_limit": 1,
            },
        },
        "AIRFLOW_CONN_CROSSBORDER_SLACK": {
            "conn_type": "slackwebhook",
            "password": f"http://127.0.0.1:{slack.server_port}/services/T0/B0/test",
        },
    }
    extra_env = {name: json.dumps(conn) for name, conn in conns.items()}
    yield mailbox, SlackWebhook.posts, {**extra_env, "AIRFLOW__API__BASE_URL": UI}
    slack.shutdown()
    smtp.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with airflow_env(tmp_path_factory.mktemp("alerts")) as local:
        yield local


def _export(env: LocalEnv, dataset: str, day: date, extra_env: dict) -> tuple[int, str]:
    logical = f"{day + timedelta(days=1)}T02:00:00+08:00"
    result = airflow(
        env, "dags", "test", f"cn_export_{dataset}", logical, check=False, timeout=300,
        extra_env=extra_env,
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def _received(mailbox: Mailbox, posts: list[dict], since: tuple[int, int]):
    return mailbox.messages[since[0] :], posts[since[1] :]


def _task_link(dataset: str, run_id: str, step: str) -> str:
    """The task's page (its log) in the Airflow UI, as Airflow builds it."""
    return f"{UI}/dags/cn_export_{dataset}/runs/{quote(run_id)}/tasks/{step}?try_number=1"


def _assert_names_everything(
    message: str, kind: str, dataset: str, day: date, step: str, run_id: str
) -> None:
    assert f"{kind}: {dataset}, Shanghai day {day}, step {step}" in message
    assert f"Runbook: docs/runbook.md#{kind}" in message
    assert f"Task: {_task_link(dataset, run_id, step)}" in message, message
    assert "Traceback" not in message


def test_a_failed_quality_suite_sends_one_alert_to_each_channel(env, channels):
    mailbox, posts, extra_env = channels
    summary = synthetic.generate_partition(env.source, "production_quality", DAY, rows=300)
    bad_file = Path(summary.path) / "part-00000.parquet"
    table = pq.read_table(bad_file)
    shifts = table.column("shift").to_pylist()
    shifts[7] = "Z"  # not a shift: a critical expectation fails
    index = table.schema.get_field_index("shift")
    pq.write_table(table.set_column(index, "shift", pa.array(shifts, pa.string())), bad_file)
    since = (len(mailbox.messages), len(posts))

    code, log = _export(env, "production_quality", DAY, extra_env)

    assert code != 0
    mails, slack = _received(mailbox, posts, since)
    assert (len(mails), len(slack)) == (1, 1), log[-3000:]  # no alert per retry or per file
    row = ledger.latest_attempt(ledger.connect(env.ledger_url), "production_quality", str(DAY))
    run_id = row["dag_run_id"]
    [mail] = mails
    assert mail["Subject"] == f"[quality_failed] production_quality {DAY}: validate"
    assert mail["To"] == "oncall@crossborder.test, compliance@crossborder.test"
    body = mail.get_body(("html",)).get_content().replace("<br>", "\n")
    _assert_names_everything(body, "quality_failed", "production_quality", DAY, "validate", run_id)
    assert "expect_column_values_to_be_in_set on shift (1 unexpected)" in body
    [post] = slack
    assert post["path"] == "/services/T0/B0/test"
    _assert_names_everything(
        post["text"], "quality_failed", "production_quality", DAY, "validate", run_id
    )
    # the same alert, with its link, is an event in the ledger
    events = ledger.list_events(ledger.connect(env.ledger_url), "production_quality", str(DAY))
    [alert] = [e["detail"] for e in events if e["kind"] == "alert"]
    assert alert["link"] == _task_link("production_quality", run_id, "validate")


def test_a_blocked_partition_sends_one_alert_and_the_run_ends_green(env, channels):
    mailbox, posts, extra_env = channels
    synthetic.generate_partition(env.source, "owner_profiles", DAY, rows=100)
    since = (len(mailbox.messages), len(posts))

    code, log = _export(env, "owner_profiles", DAY, extra_env)

    assert code == 0, log[-3000:]
    mails, slack = _received(mailbox, posts, since)
    assert (len(mails), len(slack)) == (1, 1), log[-3000:]
    row = ledger.latest_attempt(ledger.connect(env.ledger_url), "owner_profiles", str(DAY))
    assert row["state"] == "blocked"
    [post] = slack
    _assert_names_everything(
        post["text"], "partition_blocked", "owner_profiles", DAY, "record_held", row["dag_run_id"]
    )
    assert "blocked, nothing leaves China" in post["text"]
    assert mails[0]["Subject"] == f"[partition_blocked] owner_profiles {DAY}: record_held"
