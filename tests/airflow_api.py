"""Talk to a running Airflow API server as a person would: log in, list and answer the
Human-in-the-Loop gates (Browse → Required Actions in the UI)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


def call(url: str, token: str | None = None, method: str = "GET", body: Any = None) -> Any:
    """One REST call; returns the decoded JSON, or raises HTTPError with the status."""
    request = urllib.request.Request(url, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(request, data=data, timeout=30) as response:
        return json.loads(response.read() or b"null")


def token(base_url: str, username: str, password: str) -> str:
    body = {"username": username, "password": password}
    return call(f"{base_url}/auth/token", method="POST", body=body)["access_token"]


def pending_gate(
    base_url: str,
    token_: str,
    dag_id: str,
    task_id: str,
    run: Any = None,
    timeout: float = 240.0,
) -> dict[str, Any]:
    """Wait until a gate of ``dag_id`` named ``task_id`` waits for an answer; its detail.
    ``run`` is the process running the DAG: waiting stops at once if it has ended."""
    deadline = time.monotonic() + timeout
    query = urllib.parse.urlencode({"response_received": "false"})
    while time.monotonic() < deadline:
        if run is not None and run.poll() is not None:
            raise RuntimeError(f"the run ended (exit {run.returncode}) before {task_id} opened")
        found = call(f"{base_url}/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails?{query}", token_)
        for detail in found.get("hitl_details", []):
            instance = detail.get("task_instance", {})
            if instance.get("task_id") == task_id:
                return detail
        time.sleep(2)
    raise TimeoutError(f"no pending {dag_id}.{task_id} gate within {timeout} s")


def answer(
    base_url: str,
    token_: str,
    detail: dict[str, Any],
    option: str,
    params: dict[str, Any],
) -> Any:
    """Answer one gate as the token's user (HTTPError 403 if they may not)."""
    instance = detail["task_instance"]
    run_id = urllib.parse.quote(instance["dag_run_id"], safe="")
    url = (
        f"{base_url}/api/v2/dags/{instance['dag_id']}/dagRuns/{run_id}/taskInstances/"
        f"{instance['task_id']}/{instance.get('map_index', -1)}/hitlDetails"
    )
    return call(url, token_, "PATCH", {"chosen_options": [option], "params_input": params})


def status_of(error: urllib.error.HTTPError) -> int:
    return error.code
