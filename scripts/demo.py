"""`make demo`: one Shanghai day through the real DAGs, end to end, on this machine.

Generates the day's synthetic partitions for all datasets, starts a real S3 API on
loopback as U.S. storage, creates throw-away keys, runs every `cn_export_<dataset>` DAG
with `airflow dags test` (embedded SQLite), runs the U.S. receive DAG and the China-side
reconciliation, prints a summary table and stops its servers.

`make up` (``--standalone``) starts `airflow standalone` with the same configuration
instead, so a person can look at the DAGs and runs in the UI.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from crossborder import ledger, synthetic
from crossborder.localenv import LocalEnv, airflow, migrate_airflow_db, start_s3_server
from crossborder.policy import REPO_ROOT, policy_files

SHANGHAI_EXPORT_TIME = "02:00:00+08:00"


def main() -> int:
    args = _parse_args()
    env_root = Path(args.workdir).resolve()
    server, endpoint = start_s3_server()
    try:
        env = LocalEnv(env_root, endpoint)
        env.prepare()
        _say(f"work folder {env_root}; U.S. storage (S3 API) at {endpoint}")
        _say("preparing Airflow's metadata database (first run only takes a while)")
        migrate_airflow_db(env)
        day = args.date or (datetime.now().astimezone().date() - timedelta(days=1))
        _generate(env, day, args.rows)
        if args.standalone:
            return _standalone(env)
        return _run_day(env, day)
    finally:
        server.stop()


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(REPO_ROOT / ".demo"))
    parser.add_argument("--date", type=date.fromisoformat, help="Shanghai day (YYYY-MM-DD)")
    parser.add_argument("--rows", type=int, help="rows per dataset (default: generator's)")
    parser.add_argument("--standalone", action="store_true", help="start airflow standalone")
    return parser.parse_args()


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _generate(env: LocalEnv, day: date, rows: int | None) -> None:
    _say(f"generating synthetic Shanghai partitions for {day}")
    for summary in synthetic.generate_day(env.source, day, rows=rows, seed=day.toordinal()):
        _say(f"  {summary.dataset:<20} {summary.rows:>9,} rows in {summary.files} file(s)")


def _run_day(env: LocalEnv, day: date) -> int:
    logical = f"{day + timedelta(days=1)}T{SHANGHAI_EXPORT_TIME}"
    timings: dict[str, float] = {}
    failures = []
    for policy in policy_files():
        dag_id = f"cn_export_{policy.stem}"
        _say(f"airflow dags test {dag_id} {logical}")
        started = time.monotonic()
        result = airflow(env, "dags", "test", dag_id, logical, check=False)
        timings[policy.stem] = time.monotonic() - started
        _keep_log(env, dag_id, result)
        if result.returncode != 0:
            failures.append(dag_id)
    for dag_id in ("us_receive", "cn_reconcile_receipts"):
        _say(f"airflow dags test {dag_id}")
        result = airflow(env, "dags", "test", dag_id, check=False)
        _keep_log(env, dag_id, result)
        if result.returncode != 0:
            failures.append(dag_id)
    _print_summary(env, day, timings)
    if failures:
        _say(f"FAILED: {', '.join(failures)} (logs in {env.root / 'logs'})")
        return 1
    _say(f"done; U.S. lake at {env.lake}, ledger at {env.ledger_path}")
    return 0


def _keep_log(env: LocalEnv, dag_id: str, result: subprocess.CompletedProcess[str]) -> None:
    logs = env.root / "logs"
    logs.mkdir(exist_ok=True)
    (logs / f"{dag_id}.log").write_text(result.stdout + result.stderr)


def _print_summary(env: LocalEnv, day: date, timings: dict[str, float]) -> None:
    engine = ledger.connect(env.ledger_url)
    header = ("dataset", "day", "route", "state", "rows in", "rows out", "objects", "U.S. location")
    rows = []
    for dataset, seconds in timings.items():
        row = ledger.latest_attempt(engine, dataset, day.isoformat()) or {}
        location = (row.get("manifest_uri") or "-").removesuffix("manifest.json")
        rows.append(
            (
                dataset,
                day.isoformat(),
                row.get("route") or "-",
                row.get("state") or "not run",
                f"{row.get('rows_in') or 0:,}",
                f"{row.get('rows_out') or 0:,}",
                str(row.get("objects") or 0),
                location,
                f"{seconds:.1f}s",
            )
        )
    header = (*header, "duration")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    for line in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)))
    print()
    for row in rows:
        found = ledger.latest_attempt(engine, row[0], day.isoformat()) or {}
        for reason in found.get("reasons") or []:
            print(f"  {row[0]}: {reason['text']} [{reason['rule']}]")


def _standalone(env: LocalEnv) -> int:
    port = int(os.environ.get("AIRFLOW_PORT", "8080"))
    extra = {
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    }
    _say(f"Airflow UI: http://127.0.0.1:{port}  (Ctrl-C to stop); logins, generated for .demo/:")
    for name, password in env.ui_users().items():
        role = "admin" if name == "admin" else "CAC approver"
        _say(f"  {name} / {password}  ({role})")
    with contextlib.suppress(KeyboardInterrupt):
        airflow(env, "standalone", check=False, capture=False, extra_env=extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
