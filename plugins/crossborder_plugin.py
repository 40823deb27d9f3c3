"""Airflow plugin: serve the China-side quality reports (Data Docs) in the Airflow UI's server.

The reports hold masked samples only and stay on the China side; this app is served by
the same API server as the UI.
"""

from __future__ import annotations

from pathlib import Path

from airflow.plugins_manager import AirflowPlugin

from crossborder.reports import URL_PREFIX, create_app


def _staging_root() -> Path:
    from airflow.models.variable import Variable

    return Path(Variable.get("staging_root"))


class CrossborderPlugin(AirflowPlugin):
    name = "crossborder"
    fastapi_apps = [  # noqa: RUF012 (Airflow reads this class attribute)
        {"app": create_app(_staging_root), "url_prefix": URL_PREFIX, "name": "Quality reports"}
    ]
