"""Airflow plugin: the export dashboard and the China-side quality reports, in the Airflow UI.

Both are FastAPI apps served by the API server that serves the UI, and both need a user
logged in to Airflow (the UI's JWT cookie, or a bearer token): Airflow's own
``requires_authenticated`` dependency guards every route, and a browser without a login
is sent to the login page. The dashboard is in the UI's navigation ("Exports"), shown in
the UI's frame at ``/plugin/export-dashboard``.

Airflow imports this module in every process (tasks too, for macros), so the apps are
built on their first request: only the API server pays for importing its security code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from crossborder import dashboard, reports


def _staging_root() -> Path:
    from airflow.models.variable import Variable

    return Path(Variable.get("staging_root"))


def _ledger() -> Any:
    from airflow.models.connection import Connection

    from crossborder import ledger
    from crossborder.airflow_glue import ledger_url

    return ledger.connect(ledger_url(Connection.get_connection_from_secrets("export_ledger")))


def _dashboard_app(**kwargs: Any) -> Any:
    return dashboard.create_app(_ledger, **kwargs)


def _reports_app(**kwargs: Any) -> Any:
    return reports.create_app(_staging_root, **kwargs)


class LoggedInApp:
    """An ASGI app built on its first request by ``create(dependencies=[...])`` with Airflow's
    login check; a browser that is not logged in is redirected to Airflow's login page."""

    def __init__(self, create: Callable[..., Any]) -> None:
        self.create = create
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.app is None:
            self.app = self._build()
        await self.app(scope, receive, send)

    def _build(self) -> Any:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.core_api.security import requires_authenticated
        from fastapi import Depends, HTTPException, Request
        from fastapi.exception_handlers import http_exception_handler
        from fastapi.responses import RedirectResponse

        app = self.create(dependencies=[Depends(requires_authenticated())])

        @app.exception_handler(HTTPException)
        async def to_login(request: Request, exc: HTTPException) -> Any:
            wants_page = "text/html" in request.headers.get("accept", "")
            if exc.status_code == 401 and wants_page and request.method == "GET":
                login = get_auth_manager().get_url_login(next_url=str(request.url))
                return RedirectResponse(login, status_code=303)
            return await http_exception_handler(request, exc)

        return app


class CrossborderPlugin(AirflowPlugin):
    name = "crossborder"
    # Airflow reads these class attributes.
    fastapi_apps = [  # noqa: RUF012
        {
            "app": LoggedInApp(_dashboard_app),
            "url_prefix": dashboard.URL_PREFIX,
            "name": "Export dashboard",
        },
        {
            "app": LoggedInApp(_reports_app),
            "url_prefix": reports.URL_PREFIX,
            "name": "Quality reports",
        },
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Exports",  # the nav shows about nine characters
            "href": f"{dashboard.URL_PREFIX}/",
            "url_route": "export-dashboard",
            "destination": "nav",
        }
    ]
