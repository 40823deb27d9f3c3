"""A complete local environment on loopback: the demo, ``make up`` and the tests share it.

One work folder holds the Shanghai source, CN staging, the U.S. lake, throw-away keys,
the ledger and Airflow's home. A real S3 API (moto in server mode) on 127.0.0.1 stands
in for U.S. storage. ``airflow_env()`` gives the environment variables that configure
Airflow's connections and variables for it, so nothing is stored in a metadata database.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossborder.policy import REPO_ROOT

US_BUCKET = "us-landing"
REGION = "us-east-1"
# moto accepts any credentials; these name the stand-in, they protect nothing.
S3_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class LocalEnv:
    root: Path
    s3_endpoint: str

    @property
    def source(self) -> Path:
        return self.root / "shanghai-source"

    @property
    def staging(self) -> Path:
        return self.root / "cn-staging"

    @property
    def lake(self) -> Path:
        return self.root / "us-lake"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.db"

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{self.ledger_path}"

    def s3_client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.s3_endpoint, region_name=REGION, **S3_CREDENTIALS
        )

    def key(self, name: str) -> bytes:
        return (self.keys / name).read_bytes()

    def prepare(self) -> None:
        """Create folders, throw-away keys and the landing bucket (idempotent)."""
        from crossborder import crypto

        for folder in (self.source, self.staging, self.lake, self.keys, self.airflow_home):
            folder.mkdir(parents=True, exist_ok=True)
        if not (self.keys / "us_recipient_private.pem").exists():
            private, public = crypto.generate_recipient_keypair()
            self._write_key("us_recipient_private.pem", private)
            self._write_key("us_recipient_public.pem", public)
            private, public = crypto.generate_signing_keypair()
            self._write_key("manifest_signing_private.pem", private)
            self._write_key("manifest_signing_public.pem", public)
        if not (self.keys / "pseudonymization.key").exists():
            self._write_key("pseudonymization.key", secrets.token_hex(32).encode())
        s3 = self.s3_client()
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if US_BUCKET not in existing:
            s3.create_bucket(Bucket=US_BUCKET)

    def _write_key(self, name: str, data: bytes) -> None:
        path = self.keys / name
        path.write_bytes(data)
        path.chmod(0o600)

    def settings(self) -> Any:
        from crossborder.settings import Settings

        return Settings(
            source_root=self.source,
            staging_root=self.staging,
            ledger_url=self.ledger_url,
            us_bucket=US_BUCKET,
            s3_client=self.s3_client,
            recipient_public_pem=self.key("us_recipient_public.pem"),
            signing_private_pem=self.key("manifest_signing_private.pem"),
            pseudonymization_key=self.key("pseudonymization.key"),
        )

    @property
    def ui_passwords_path(self) -> Path:
        return self.airflow_home / "ui_passwords.json"

    def ui_users(self) -> dict[str, str]:
        """Login → password for the UI: ``admin`` and the configured CAC approvers.

        Passwords are generated once per environment (never committed) and kept in a
        file only its owner can read, which Airflow's simple auth manager reads too.
        """
        from crossborder.review import load_config

        path = self.ui_passwords_path
        if not path.exists():
            names = ["admin", *(a["id"] for a in load_config().approvers)]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({n: secrets.token_urlsafe(12) for n in names}))
            path.chmod(0o600)
        return json.loads(path.read_text())

    def airflow_env(self) -> dict[str, str]:
        """Environment for Airflow commands: its home, folders, connections, variables and
        the UI's users (``admin``, and the CAC approvers with the ``user`` role)."""
        conn = {
            "cn_source": {"conn_type": "fs", "extra": {"path": str(self.source)}},
            "us_landing": {
                "conn_type": "aws",
                "login": S3_CREDENTIALS["aws_access_key_id"],
                "password": S3_CREDENTIALS["aws_secret_access_key"],
                "extra": {"endpoint_url": self.s3_endpoint, "region_name": REGION},
            },
            "export_ledger": {"conn_type": "sqlite", "host": str(self.ledger_path)},
        }
        variables = {
            "staging_root": str(self.staging),
            "us_landing_bucket": US_BUCKET,
            "us_lake_root": str(self.lake),
            "us_recipient_public_key": self.key("us_recipient_public.pem").decode(),
            "manifest_signing_key": self.key("manifest_signing_private.pem").decode(),
            "pseudonymization_key": self.key("pseudonymization.key").decode(),
            "us_recipient_private_key": self.key("us_recipient_private.pem").decode(),
            "cn_manifest_public_key": self.key("manifest_signing_public.pem").decode(),
        }
        env = {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DEFAULT_TIMEZONE": "Asia/Shanghai",
            "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP": r"crossborder\..*",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "GX_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                f"{name}:{'admin' if name == 'admin' else 'user'}" for name in self.ui_users()
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.ui_passwords_path),
        }
        env.update({f"AIRFLOW_CONN_{k.upper()}": json.dumps(v) for k, v in conn.items()})
        env.update({f"AIRFLOW_VAR_{k.upper()}": v for k, v in variables.items()})
        return env


def start_s3_server() -> tuple[Any, str]:
    """A real S3 API on loopback (moto server mode); returns (server, endpoint url)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def _command_env(env: LocalEnv, extra_env: dict[str, str] | None) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent  # the venv's; standalone starts `airflow ...` by name
    path = os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])
    return {**os.environ, **env.airflow_env(), "PATH": path, **(extra_env or {})}


def airflow(
    env: LocalEnv,
    *args: str,
    check: bool = True,
    timeout: float | None = None,
    capture: bool = True,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run an ``airflow`` CLI command in this environment."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), *args],
        env=_command_env(env, extra_env),
        check=check,
        capture_output=capture,
        text=True,
        timeout=timeout,
    )


def migrate_airflow_db(env: LocalEnv) -> None:
    if not (env.airflow_home / "airflow.db").exists():
        airflow(env, "db", "migrate")


def start_airflow(
    env: LocalEnv, *args: str, log: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start an ``airflow`` CLI command in the background, in its own process group."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), *args],
            env=_command_env(env, extra_env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """Stop a process started by ``start_airflow`` and its children (SIGKILL if it must)."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def api_server(
    env: LocalEnv, log: Path, timeout: float = 120.0, extra_env: dict[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """Airflow's API server (UI, REST API, execution API) on loopback; yields the extra
    environment (``api.base_url``, the execution API for workers, and ``extra_env``) that
    commands sharing its database should use."""
    import time
    import urllib.request

    url = f"http://127.0.0.1:{free_port()}"
    extra = {
        **(extra_env or {}),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
    }
    process = start_airflow(
        env, "api-server", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1],
        log=log, extra_env=extra,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the API server did not start; see {log}") from None
                time.sleep(1)
        yield extra
    finally:
        stop(process)
