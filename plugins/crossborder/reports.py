"""Quality reports (Great Expectations Data Docs) on the China side, and how to reach them.

Each export run writes its reports to ``{staging_root}/_quality_reports/{dataset}/{run}/``.
The Airflow API server serves that folder under ``/quality-reports`` to users logged in to
Airflow (the plugin in ``plugins/crossborder_plugin.py``), and the validate task's
"Quality report" extra link points there, so an engineer clicks from a failed task to its
report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

URL_PREFIX = "/quality-reports"
FOLDER = "_quality_reports"


def _safe(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


def report_dir(staging_root: Path, dataset: str, run_id: str) -> Path:
    return Path(staging_root) / FOLDER / dataset / _safe(run_id)


def report_url(dataset: str, run_id: str) -> str:
    return f"{URL_PREFIX}/{quote(dataset)}/{quote(_safe(run_id))}/index.html"


def resolve(staging_root: Path, relative: str) -> Path | None:
    """The report file a URL path names, or None if it is missing or outside the folder."""
    base = (Path(staging_root) / FOLDER).resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target


def create_app(staging_root: Callable[[], Path], dependencies: Sequence[Any] = ()) -> Any:
    """A FastAPI app serving the report files; ``staging_root`` is read per request and
    ``dependencies`` guard every route (the plugin passes Airflow's login check)."""
    from fastapi import HTTPException
    from fastapi.responses import FileResponse

    from crossborder.ui import plugin_app

    app = plugin_app("Quality reports", dependencies)

    @app.get("/{relative:path}")
    def report(relative: str) -> FileResponse:
        found = resolve(staging_root(), relative)
        if found is None:
            raise HTTPException(status_code=404, detail="no such quality report")
        return FileResponse(found)

    return app
