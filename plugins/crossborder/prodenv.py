"""The production configuration on one machine: Airflow on the Celery executor, with
PostgreSQL for Airflow's metadata, the Celery results and the export ledger, and Redis as
the Celery broker. Every component is its own process on loopback: API server (UI, REST
API, execution API), scheduler, dag-processor and several Celery workers.

``celery_settings()`` names the configuration (Airflow's own environment variables and
the ``export_ledger`` connection), the same names a deployment such as ``docker/`` sets.
``CeleryCluster`` starts the components for a prepared ``LocalEnv`` (its folders, keys,
S3 stand-in, variables and UI users) on throw-away databases:

- two fresh PostgreSQL databases per cluster (unique names): Airflow's metadata (also the
  Celery result backend, ``db+postgresql://``) and the export ledger;
- a Redis database index of its own as the broker, claimed empty and flushed at the end;
- generated Fernet key, JWT secret and API secret key (never written to the repository).

``close()`` stops every component and every process of its session (each component is
started in a session of its own; task processes included), kills any process still found
there or carrying the cluster's marker in its environment, drops both databases and
flushes the Redis index, and reports what it did; it runs even when starting failed
half-way. No component
listens beyond loopback: the workers do not serve their logs over HTTP (``-s``), task
logs land in the shared ``AIRFLOW_HOME/logs`` that the API server reads.

The Postgres metadata database needs ``asyncpg`` as well as ``psycopg2``: Airflow 3 opens
an async engine on it (``postgresql+asyncpg``) next to the sync one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossborder.localenv import LocalEnv, airflow, free_port, start_airflow

PG_ADMIN_URL = os.environ.get(
    "CROSSBORDER_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CROSSBORDER_REDIS_URL", "redis://127.0.0.1:6379")
# Set in every component's environment: finds strays, and names each worker's node.
MARKER_ENV = "CROSSBORDER_CLUSTER"
NODE_ENV = "CROSSBORDER_NODE_NAME"
# The key that claims a Redis database index for one cluster.
REDIS_CLAIM_KEY = "crossborder:cluster"
REDIS_DATABASES = range(1, 16)  # 0 is everyone's default: never used


def node_name() -> str:
    """Airflow's ``[core] hostname_callable`` for several workers on one machine: the
    node's name from ``CROSSBORDER_NODE_NAME``, else the machine's FQDN (Airflow's default).
    It is what a task instance records as its ``hostname``."""
    return os.environ.get(NODE_ENV) or socket.getfqdn()


def database_url(admin_url: str, name: str) -> str:
    """``admin_url`` (any database on the server) pointed at database ``name``."""
    import sqlalchemy as sa

    url = sa.make_url(admin_url).set(database=name)
    return url.render_as_string(hide_password=False)


def ledger_connection(url: str) -> dict[str, Any]:
    """The ``export_ledger`` connection (type ``postgres``) for a PostgreSQL URL."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    conn: dict[str, Any] = {
        "conn_type": "postgres",
        "host": parsed.host,
        "port": parsed.port or 5432,
        "login": parsed.username,
        "schema": parsed.database,
    }
    if parsed.password:
        conn["password"] = parsed.password
    return conn


def celery_settings(
    *,
    metadata_url: str,
    broker_url: str,
    ledger_url: str,
    concurrency: int = 2,
    queue: str = "default",
) -> dict[str, str]:
    """Airflow's configuration for the Celery executor, as environment variables.

    Secrets (Fernet key, JWT secret, API secret key) are generated here, per cluster.
    """
    from cryptography.fernet import Fernet

    # The driver is named: SQLAlchemy 2.1's default for postgresql:// is psycopg 3.
    result_backend = f"db+{metadata_url}"
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
        # Celery's default, stated: an unacknowledged task is redelivered after a day.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "crossborder.prodenv.node_name",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),  # HS512 wants >= 64 bytes
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW_CONN_EXPORT_LEDGER": json.dumps(ledger_connection(ledger_url)),
    }


# --- throw-away databases ----------------------------------------------------------------


def create_database(admin_url: str, name: str) -> str:
    import sqlalchemy as sa

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return database_url(admin_url, name)


def drop_database(admin_url: str, name: str) -> bool:
    """Drop ``name`` (closing its sessions); whether it is gone afterwards."""
    import sqlalchemy as sa

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            found = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
    finally:
        admin.dispose()
    return found is None


def claim_redis_database(redis_url: str, owner: str) -> int:
    """An empty Redis database index, claimed for ``owner`` with a marker key."""
    import redis

    for index in REDIS_DATABASES:
        client = redis.Redis.from_url(redis_url, db=index)
        try:
            if client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, owner, nx=True):
                if client.dbsize() == 1:
                    return index
                client.delete(REDIS_CLAIM_KEY)  # someone else started here at the same time
        finally:
            client.close()
    raise RuntimeError(f"no empty Redis database index on {redis_url}")


def release_redis_database(redis_url: str, index: int, owner: str) -> int:
    """Flush the claimed index if it is still ours; the keys left there (0 when done)."""
    import redis

    client = redis.Redis.from_url(redis_url, db=index)
    try:
        if client.get(REDIS_CLAIM_KEY) == owner.encode():
            client.flushdb()
        return client.dbsize()
    finally:
        client.close()


# --- processes ---------------------------------------------------------------------------


def cluster_processes(sessions: set[int], marker: str) -> list[Any]:
    """Live processes (not zombies) of a cluster: in one of its components' sessions
    (each component starts its own), or with ``MARKER_ENV=marker`` in their environment
    (setproctitle clobbers that in many Airflow and Celery processes, sessions stay)."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE or process.pid == os.getpid():
                continue
            ours = os.getsid(process.pid) in sessions
            if ours or (marker and process.environ().get(MARKER_ENV) == marker):
                found.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def stop_sessions(processes: list[subprocess.Popen[bytes]], grace: float = 20.0) -> None:
    """Stop components started each in its own session (``start_airflow``) and every
    process of those sessions, task processes in their own process groups included, all
    at once: SIGTERM, wait up to ``grace`` seconds, then SIGKILL what is left."""
    import psutil

    sessions = {p.pid for p in processes}

    def done() -> bool:
        ended = all(p.poll() is not None for p in processes)  # poll() reaps the leaders
        return ended and not cluster_processes(sessions, marker="")

    for sig in (signal.SIGTERM, signal.SIGKILL):
        if done():
            return
        for member in cluster_processes(sessions, marker=""):
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(sig)
        deadline = time.monotonic() + grace
        while not done() and time.monotonic() < deadline:
            time.sleep(0.2)
    for process in processes:
        process.wait(timeout=grace)


# --- the cluster -------------------------------------------------------------------------


@dataclass
class CeleryCluster:
    """Airflow on Celery + PostgreSQL + Redis for ``env``; ``start()``, then ``close()``."""

    env: LocalEnv
    workers: int = 2
    concurrency: int = 2
    admin_url: str = PG_ADMIN_URL
    redis_url: str = REDIS_URL
    startup_timeout: float = 180.0
    name: str = field(default_factory=lambda: f"xb_{uuid.uuid4().hex[:10]}")
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _databases: list[str] = field(default_factory=list)
    _redis_db: int | None = None
    _report: dict[str, Any] | None = None

    @property
    def metadata_db(self) -> str:
        return f"{self.name}_airflow"

    @property
    def ledger_db(self) -> str:
        return f"{self.name}_ledger"

    @property
    def metadata_url(self) -> str:
        return database_url(self.admin_url, self.metadata_db)

    @property
    def ledger_url(self) -> str:
        return database_url(self.admin_url, self.ledger_db)

    @property
    def broker_url(self) -> str:
        return f"{self.redis_url.rstrip('/')}/{self._redis_db}"

    @property
    def base_url(self) -> str:
        return self.extra_env["AIRFLOW__API__BASE_URL"]

    @property
    def worker_names(self) -> list[str]:
        return [f"worker-{i + 1}" for i in range(self.workers)]

    @property
    def logs(self) -> Path:
        return self.env.root / "logs"

    def start(self) -> CeleryCluster:
        """Databases, broker index, ``airflow db migrate``, then the components (the
        scheduler once the API server is healthy); returns when every worker answers a
        ping."""
        import importlib.util

        if importlib.util.find_spec("asyncpg") is None:
            raise RuntimeError("Airflow on PostgreSQL needs asyncpg (requirements.txt)")
        started = time.monotonic()
        self._redis_db = claim_redis_database(self.redis_url, self.name)
        for name in (self.metadata_db, self.ledger_db):
            create_database(self.admin_url, name)
            self._databases.append(name)
        url = f"http://127.0.0.1:{free_port()}"
        self.extra_env = {
            **celery_settings(
                metadata_url=self.metadata_url,
                broker_url=self.broker_url,
                ledger_url=self.ledger_url,
                concurrency=self.concurrency,
            ),
            "AIRFLOW__API__BASE_URL": url,
            # Workers run tasks through the API server's execution API.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            MARKER_ENV: self.name,
        }
        migrated = airflow(
            self.env, "db", "migrate", extra_env=self.extra_env, timeout=300, check=False
        )
        if migrated.returncode != 0:
            output = (migrated.stdout + migrated.stderr)[-3000:]
            raise RuntimeError(f"airflow db migrate failed:\n{output}")
        self.timings["migrate"] = time.monotonic() - started
        port = url.rsplit(":", 1)[1]
        self._start("api-server", "api-server", "--host", "127.0.0.1", "--port", port)
        self._start("dag-processor", "dag-processor")
        for node in self.worker_names:
            self._start(
                node,
                "celery", "worker", "--celery-hostname", f"{node}@%h",
                "--concurrency", str(self.concurrency), "--skip-serve-logs",
                extra={NODE_ENV: node},
            )  # fmt: skip
        self.wait_for_api()
        # The scheduler last: the tasks it queues find the execution API up.
        self._start("scheduler", "scheduler")
        self.wait_for_workers()
        self.timings["start"] = time.monotonic() - started
        return self

    def _start(self, name: str, *args: str, extra: dict[str, str] | None = None) -> None:
        self.processes[name] = start_airflow(
            self.env,
            *args,
            log=self.logs / f"{name}.log",
            extra_env={**self.extra_env, **(extra or {})},
        )

    def check_running(self) -> None:
        """RuntimeError, with the end of its log, if a component has ended."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = self.logs / f"{name}.log"
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise RuntimeError(
                    f"cluster component {name} ended (exit {process.returncode}); "
                    f"end of {log}:\n{tail}"
                )

    def ping_workers(self) -> list[str]:
        """Celery node names answering a broadcast ping on the broker."""
        from celery import Celery

        app = Celery(broker=self.broker_url)
        try:
            return sorted(name for reply in app.control.ping(timeout=2.0) for name in reply)
        finally:
            app.close()

    def wait_for_api(self) -> None:
        import urllib.request

        deadline = time.monotonic() + self.startup_timeout
        while True:
            self.check_running()
            try:
                with urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    message = f"the API server did not start; logs in {self.logs}"
                    raise TimeoutError(message) from None
                time.sleep(1)

    def wait_for_workers(self) -> list[str]:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            self.check_running()
            nodes = self.ping_workers()
            if len(nodes) == self.workers and all(
                any(n.startswith(f"{w}@") for n in nodes) for w in self.worker_names
            ):
                return nodes
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers answering: {nodes}; logs in {self.logs}")
            time.sleep(1)

    def metadata(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """Rows of a query on Airflow's metadata database (read-only checks)."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.metadata_url)
        try:
            with engine.connect() as conn:
                return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]
        finally:
            engine.dispose()

    def wait_for_dags(self, dag_ids: list[str]) -> None:
        """Until the dag-processor has stored every DAG in ``dag_ids``."""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            self.check_running()
            rows = self.metadata("SELECT dag_id FROM serialized_dag")
            missing = set(dag_ids) - {r["dag_id"] for r in rows}
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAGs not parsed: {sorted(missing)}; logs in {self.logs}")
            time.sleep(1)

    def live_processes(self) -> list[Any]:
        """Every live process of the cluster, the components' children included."""
        return cluster_processes({p.pid for p in self.processes.values()}, self.name)

    def listening(self) -> list[tuple[str, str, int]]:
        """(component, address, port) of every socket the cluster's processes listen on."""
        import psutil

        found = []
        for process in self.live_processes():
            try:
                connections = process.net_connections(kind="inet")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            found.extend(
                (process.name(), c.laddr.ip, c.laddr.port)
                for c in connections
                if c.status == psutil.CONN_LISTEN
            )
        return found

    def close(self) -> dict[str, Any]:
        """Stop everything, drop the databases, flush the broker; what was cleaned up.

        Idempotent: a second call returns the first call's report."""
        if self._report is not None:
            return self._report
        import psutil

        started = time.monotonic()
        report: dict[str, Any] = {"stopped": [], "killed_strays": [], "errors": []}
        try:
            stop_sessions(list(self.processes.values()))
            report["stopped"] = list(self.processes)
        except Exception as exc:  # report, and go on cleaning up
            report["errors"].append(f"stop: {exc!r}")
        for process in self.live_processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                report["killed_strays"].append(f"{process.pid} {' '.join(process.cmdline())}")
                process.kill()
        report["remaining_processes"] = [p.pid for p in self.live_processes()]
        report["dropped_databases"] = []
        for name in self._databases:
            try:
                if drop_database(self.admin_url, name):
                    report["dropped_databases"].append(name)
            except Exception as exc:
                report["errors"].append(f"drop {name}: {exc!r}")
        if self._redis_db is not None:
            report["redis_db"] = self._redis_db
            try:
                left = release_redis_database(self.redis_url, self._redis_db, self.name)
                report["redis_keys_left"] = left
            except Exception as exc:
                report["errors"].append(f"flush redis db {self._redis_db}: {exc!r}")
        report["seconds"] = time.monotonic() - started
        self._report = report
        return report


@contextmanager
def celery_cluster(env: LocalEnv, **options: Any) -> Iterator[CeleryCluster]:
    """A running ``CeleryCluster`` for a prepared ``env``; cleaned up on exit, even on
    failure (its report in ``cluster.close()``)."""
    cluster = CeleryCluster(env, **options)
    try:
        yield cluster.start()
    finally:
        cluster.close()
