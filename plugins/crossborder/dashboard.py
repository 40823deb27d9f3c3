"""The export dashboard: the ledger as a page of the Airflow UI.

Per dataset and Shanghai day, the latest attempt (route, state, rows, reasons, approvals,
U.S. receipt) with the earlier attempts of the day; counts per state; the partitions
awaiting CAC review, each linked to its review in the UI. Filters by state and dataset
narrow the table; the counts and the review list always cover the whole ledger.

Read-only, plain functions: ``load`` queries the ledger, ``render`` writes the HTML
(Jinja2, autoescaped), ``create_app`` serves it. The plugin in
``plugins/crossborder_plugin.py`` mounts the app in Airflow's API server, behind
Airflow's login, and adds the page to the UI's navigation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa

from crossborder import ledger
from crossborder.ui import (
    PENDING_ACTIONS_URL,
    export_dag_id,
    plugin_app,
    review_run_id,
    review_url,
    run_url,
)

URL_PREFIX = "/export-dashboard"
LIMIT = 500  # partitions in the table; the counts and the review list are never cut


@dataclass(frozen=True)
class Attempt:
    """One attempt as the page shows it."""

    attempt: int
    dag_run_id: str
    state: str
    route: str | None
    rows_in: int | None
    rows_out: int | None
    reasons: tuple[str, ...]  # "text [rule]", then the error of a failed attempt
    approvals: tuple[dict[str, Any], ...]  # {"by", "at", "cac_reference"}
    receipt: dict[str, Any] | None  # the U.S. receipt once reconciled
    manifest_uri: str | None
    updated_at: datetime


@dataclass(frozen=True)
class Partition:
    dataset: str
    day: str
    latest: Attempt
    earlier: tuple[Attempt, ...]  # newest first
    review_run_id: str | None  # the cn_cac_review run, while awaiting review

    @property
    def run_url(self) -> str:
        return run_url(export_dag_id(self.dataset), self.latest.dag_run_id)

    @property
    def review_url(self) -> str | None:
        return review_url(self.review_run_id) if self.review_run_id else None


@dataclass(frozen=True)
class Dashboard:
    partitions: tuple[Partition, ...]  # the table: filtered, newest day first
    truncated: bool  # more partitions matched than the table shows
    counts: dict[str, int]  # latest attempts per state, whole ledger, every state listed
    awaiting_review: tuple[Partition, ...]  # whole ledger, oldest day first
    datasets: tuple[str, ...]
    state: str | None
    dataset: str | None


# --- the ledger, read -----------------------------------------------------------------------


def _is_latest() -> sa.ColumnElement[bool]:
    t, newer = ledger.attempts, ledger.attempts.alias("newer")
    return ~sa.exists().where(
        newer.c.dataset == t.c.dataset,
        newer.c.partition_date == t.c.partition_date,
        newer.c.attempt > t.c.attempt,
    )


def load(
    engine: sa.Engine, state: str | None = None, dataset: str | None = None, limit: int = LIMIT
) -> Dashboard:
    """The dashboard's content: latest attempt per dataset and day (filtered by ``state``
    and ``dataset``), earlier attempts, counts per state and the partitions awaiting review."""
    if state is not None and state not in ledger.STATES:
        raise ValueError(f"unknown state {state!r}; one of {', '.join(ledger.STATES)}")
    t = ledger.attempts
    latest = sa.select(t).where(_is_latest())
    table = latest
    if state:
        table = table.where(t.c.state == state)
    if dataset:
        table = table.where(t.c.dataset == dataset)
    table = table.order_by(t.c.partition_date.desc(), t.c.dataset).limit(limit + 1)
    waiting = latest.where(t.c.state == "awaiting_review").order_by(t.c.partition_date, t.c.dataset)
    per_state = sa.select(t.c.state, sa.func.count()).where(_is_latest()).group_by(t.c.state)
    with engine.connect() as conn:
        found = [dict(r) for r in conn.execute(table).mappings()]
        shown, truncated = found[:limit], len(found) > limit
        awaiting = [dict(r) for r in conn.execute(waiting).mappings()]
        counts = dict.fromkeys(ledger.STATES, 0) | dict(conn.execute(per_state).all())
        datasets = tuple(conn.scalars(sa.select(t.c.dataset).distinct().order_by(t.c.dataset)))
        history = _attempts_of(conn, shown)
        reviews = _review_runs(conn, [r["id"] for r in shown + awaiting])

    def partition(row: dict[str, Any]) -> Partition:
        key = (row["dataset"], row["partition_date"])
        review_run = None
        if row["state"] == "awaiting_review":
            review_run = reviews.get(row["id"], review_run_id(row["dag_run_id"]))
        return Partition(
            dataset=row["dataset"],
            day=row["partition_date"],
            latest=_attempt(row),
            earlier=tuple(_attempt(r) for r in history.get(key, []) if r["id"] != row["id"]),
            review_run_id=review_run,
        )

    return Dashboard(
        partitions=tuple(partition(r) for r in shown),
        truncated=truncated,
        counts=counts,
        awaiting_review=tuple(partition(r) for r in awaiting),
        datasets=datasets,
        state=state,
        dataset=dataset,
    )


def _attempts_of(
    conn: sa.Connection, rows: list[dict[str, Any]]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every attempt of the shown partitions, newest first, by (dataset, day)."""
    if not rows:
        return {}
    t = ledger.attempts
    days = [r["partition_date"] for r in rows]
    query = (
        sa.select(t)
        .where(
            t.c.dataset.in_(sorted({r["dataset"] for r in rows})),
            t.c.partition_date.between(min(days), max(days)),
        )
        .order_by(t.c.attempt.desc())
    )
    shown = {(r["dataset"], r["partition_date"]) for r in rows}
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in conn.execute(query).mappings():
        key = (r["dataset"], r["partition_date"])
        if key in shown:
            found.setdefault(key, []).append(dict(r))
    return found


def _review_runs(conn: sa.Connection, attempt_ids: list[int]) -> dict[int, str]:
    """The review run opened for each attempt (the latest one), from the ledger's events."""
    if not attempt_ids:
        return {}
    e = ledger.events
    query = (
        sa.select(e.c.attempt_id, e.c.detail)
        .where(e.c.kind == "review_opened", e.c.attempt_id.in_(sorted(set(attempt_ids))))
        .order_by(e.c.id)
    )
    return {a: d["review_run_id"] for a, d in conn.execute(query).all() if "review_run_id" in d}


def _attempt(row: Mapping[str, Any]) -> Attempt:
    reasons = [f"{r.get('text')} [{r.get('rule')}]" for r in row["reasons"] or []]
    if row["error"]:
        reasons.append(str(row["error"]))
    return Attempt(
        attempt=row["attempt"],
        dag_run_id=row["dag_run_id"],
        state=row["state"],
        route=row["route"],
        rows_in=row["rows_in"],
        rows_out=row["rows_out"],
        reasons=tuple(reasons),
        approvals=tuple(row["approvals"] or []),
        receipt=row["receipt"],
        manifest_uri=row["manifest_uri"],
        updated_at=_utc(row["updated_at"]),
    )


def _utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- the page -------------------------------------------------------------------------------

# Links into the Airflow UI carry data-ui: the page runs in the UI's sandboxed iframe,
# which may not navigate the top window, so a click moves the UI's own router there
# (same origin). Opened on its own, the page follows the link as usual.
_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Export dashboard</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #1a202c; }
  h1 { font-size: 20px; margin: 0 0 12px; }
  h2 { font-size: 16px; margin: 20px 0 8px; }
  a { color: #1a56db; }
  .counts { display: flex; gap: 8px; flex-wrap: wrap; margin: 0; padding: 0; }
  .counts li { list-style: none; }
  .counts a { display: block; padding: 4px 10px; border: 1px solid #cbd5e0;
              border-radius: 12px; text-decoration: none; color: inherit; }
  .counts a[aria-current] { border-color: #1a56db; background: #ebf4ff; }
  .review { border: 1px solid #f6ad55; background: #fffaf0; padding: 8px 12px;
            border-radius: 6px; }
  .review ul { margin: 4px 0 0; padding-left: 20px; }
  form { margin: 12px 0; display: flex; gap: 12px; align-items: center; }
  table { border-collapse: collapse; width: 100%; }
  th, td { border-bottom: 1px solid #e2e8f0; padding: 6px 8px; text-align: left;
           vertical-align: top; }
  th { background: #f7fafc; }
  td.num { text-align: right; white-space: nowrap; }
  td.day { white-space: nowrap; }
  ul.plain { margin: 0; padding-left: 16px; }
  .state { padding: 1px 8px; border-radius: 10px; white-space: nowrap;
           background: #edf2f7; }
  .state-exported, .state-received { background: #c6f6d5; }
  .state-awaiting_review { background: #feebc8; }
  .state-blocked, .state-rejected, .state-failed { background: #fed7d7; }
  .muted { color: #718096; }
  details { margin-top: 4px; }
</style>
</head>
<body>
<h1>Cross-border exports</h1>
<ul class="counts" aria-label="Partitions per state">
  <li><a href="?{{ query(None, dataset) }}"{% if not state %} aria-current="true"{% endif %}>all
    {{ counts.values() | sum }}</a></li>
  {% for name, n in counts.items() %}
  <li><a href="?{{ query(name, dataset) }}"{% if state == name %} aria-current="true"{% endif %}
    >{{ name }} {{ n }}</a></li>
  {% endfor %}
</ul>

<section class="review" aria-labelledby="review-heading">
  <h2 id="review-heading">{{ awaiting_review | length }} partition{{
    "" if awaiting_review | length == 1 else "s" }} awaiting CAC review</h2>
  {% if awaiting_review %}
  <ul>
    {% for p in awaiting_review %}
    <li><a data-ui href="{{ p.review_url }}">Review {{ p.dataset }} {{ p.day }}</a>
      <span class="muted">(handed over by run {{ p.latest.dag_run_id }})</span></li>
    {% endfor %}
  </ul>
  <p><a data-ui href="{{ pending_actions_url }}">All pending required actions</a></p>
  {% endif %}
</section>

<form method="get" aria-label="Filter">
  <label for="state">State</label>
  <select id="state" name="state">
    <option value="">all states</option>
    {% for name in counts %}
    <option value="{{ name }}"{% if state == name %} selected{% endif %}>{{ name }}</option>
    {% endfor %}
  </select>
  <label for="dataset">Dataset</label>
  <select id="dataset" name="dataset">
    <option value="">all datasets</option>
    {% for name in datasets %}
    <option value="{{ name }}"{% if dataset == name %} selected{% endif %}>{{ name }}</option>
    {% endfor %}
  </select>
  <button type="submit">Filter</button>
</form>

<table aria-label="Exports">
<thead><tr>
  <th>Shanghai day</th><th>Dataset</th><th>Route</th><th>State</th>
  <th>Rows in</th><th>Rows out</th><th>Reasons</th><th>Approvals</th>
  <th>U.S. receipt</th><th>Export run</th>
</tr></thead>
<tbody>
{% for p in partitions %}{% set a = p.latest %}
<tr>
  <td class="day">{{ p.day }}</td>
  <td>{{ p.dataset }}</td>
  <td>{{ a.route or "-" }}</td>
  <td><span class="state state-{{ a.state }}">{{ a.state }}</span>
    {% if p.review_url %}<br><a data-ui href="{{ p.review_url }}">open review</a>{% endif %}</td>
  <td class="num">{{ number(a.rows_in) }}</td>
  <td class="num">{{ number(a.rows_out) }}</td>
  <td>{% if a.reasons %}<ul class="plain">{% for r in a.reasons %}<li>{{ r }}</li>{% endfor
    %}</ul>{% else %}<span class="muted">-</span>{% endif %}</td>
  <td>{% if a.approvals %}<ul class="plain">{% for x in a.approvals %}<li>{{ x.by }}:
    {{ x.cac_reference }} <span class="muted">{{ x.at }}</span></li>{% endfor %}</ul>
    {% else %}<span class="muted">-</span>{% endif %}</td>
  <td>{% if a.receipt %}received {{ a.receipt.received_at }}<br>{{ number(a.receipt.rows) }}
    rows by {{ a.receipt.receiver }}<br><span class="muted">{{ a.receipt.lake_path }}</span>
    {% elif a.manifest_uri %}awaiting receipt<br><span class="muted">{{ a.manifest_uri }}</span>
    {% else %}<span class="muted">-</span>{% endif %}</td>
  <td><a data-ui href="{{ p.run_url }}">{{ a.dag_run_id }}</a>
    <br><span class="muted">attempt {{ a.attempt }}, {{ when(a.updated_at) }}</span>
    {% if p.earlier %}<details><summary>{{ p.earlier | length }} earlier attempt{{
      "" if p.earlier | length == 1 else "s" }}</summary><ul class="plain">
      {% for e in p.earlier %}<li>attempt {{ e.attempt }}: {{ e.state }}
        ({{ e.route or "no route" }}){% if e.reasons %}: {{ e.reasons | join("; ") }}{% endif %}
        <span class="muted">{{ e.dag_run_id }}, {{ when(e.updated_at) }}</span></li>
      {% endfor %}</ul></details>{% endif %}</td>
</tr>
{% else %}
<tr><td colspan="10" class="muted">No partition in the ledger matches.</td></tr>
{% endfor %}
</tbody>
</table>
{% if truncated %}<p class="muted">Showing the {{ partitions | length }} newest partitions;
  filter to see others.</p>{% endif %}
<script>
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-ui]");
  if (!link || window.top === window || event.button !== 0 || event.ctrlKey
      || event.metaKey || event.shiftKey) return;
  try {
    window.top.history.pushState(null, "", link.getAttribute("href"));
    window.top.dispatchEvent(new PopStateEvent("popstate"));
    event.preventDefault();
  } catch (error) {
    // Not the UI's frame (another origin): follow the link here.
  }
});
</script>
</body>
</html>
"""


@cache
def _template() -> Any:
    import jinja2

    return jinja2.Environment(autoescape=True).from_string(_TEMPLATE)


def _query(state: str | None, dataset: str | None) -> str:
    return urlencode({k: v for k, v in (("state", state), ("dataset", dataset)) if v})


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def render(dashboard: Dashboard) -> str:
    """The page as HTML; every value from the ledger is escaped."""
    return _template().render(
        partitions=dashboard.partitions,
        truncated=dashboard.truncated,
        counts=dashboard.counts,
        awaiting_review=dashboard.awaiting_review,
        datasets=dashboard.datasets,
        state=dashboard.state,
        dataset=dashboard.dataset,
        pending_actions_url=PENDING_ACTIONS_URL,
        query=_query,
        number=_number,
        when=_when,
    )


def create_app(engine: Callable[[], sa.Engine], dependencies: Sequence[Any] = ()) -> Any:
    """A FastAPI app serving the page at ``/``; ``engine`` is called per request and
    ``dependencies`` guard every route (the plugin passes Airflow's login check)."""
    from fastapi import HTTPException
    from fastapi.responses import HTMLResponse

    app = plugin_app("Export dashboard", dependencies)

    @app.get("/", response_class=HTMLResponse)
    def page(state: str = "", dataset: str = "") -> HTMLResponse:
        try:
            found = load(engine(), state=state or None, dataset=dataset or None)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return HTMLResponse(render(found), headers={"Cache-Control": "no-store"})

    return app
