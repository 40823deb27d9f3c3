"""The Airflow UI as the project links to it: DAG ids (DESIGN.md), the UI's routes, and
the apps the plugin mounts in it.

Paths are relative to the UI's root; ``absolute`` prefixes ``[api] base_url`` for links
that leave the UI (alerts). Run ids hold ':' and '+', so every part is quoted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

EXPORT_DAG_PREFIX = "cn_export_"  # one export DAG per dataset: cn_export_<dataset>
REVIEW_DAG_ID = "cn_cac_review"
REVIEW_RUN_PREFIX = "review__"  # a review run's id: the prefix and the daily run's id
PENDING_ACTIONS_URL = "/required_actions?response_received=false"  # Browse → Required Actions


def export_dag_id(dataset: str) -> str:
    return EXPORT_DAG_PREFIX + dataset


def dataset_of(dag_id: str) -> str | None:
    """The dataset of an export DAG; None for every other DAG."""
    return dag_id.removeprefix(EXPORT_DAG_PREFIX) if dag_id.startswith(EXPORT_DAG_PREFIX) else None


def review_run_id(export_run_id: str) -> str:
    """The id of the review run a daily run hands its partition over to."""
    return REVIEW_RUN_PREFIX + export_run_id


def dag_url(dag_id: str) -> str:
    return f"/dags/{quote(dag_id, safe='')}"


def run_url(dag_id: str, run_id: str) -> str:
    return f"{dag_url(dag_id)}/runs/{quote(run_id, safe='')}"


def review_url(review_run_id: str) -> str:
    """The review run's Required Actions tab: its gates, to answer in the UI."""
    return run_url(REVIEW_DAG_ID, review_run_id) + "/required_actions"


def absolute(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


def plugin_app(title: str, dependencies: Sequence[Any] = ()) -> Any:
    """A FastAPI app for a page the plugin mounts in the Airflow UI: no API docs, and
    ``dependencies`` guarding every route (the plugin passes Airflow's login check)."""
    from fastapi import FastAPI

    return FastAPI(
        title=title,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=list(dependencies),
    )
