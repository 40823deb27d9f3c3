"""Generate the compose deployment's secrets into ``docker/secrets/`` (git-ignored).

    PYTHONPATH=plugins .venv/bin/python docker/make_secrets.py            # from the repo root
    docker run --rm -u "$(id -u)" -v "$PWD/docker/secrets:/out" \\
        crossborder-airflow:3.3.2 python /opt/airflow/deploy/make_secrets.py --dir /out

Nothing here is a real secret: every password, key and token is generated on the machine
that runs this, with ``secrets`` and ``crossborder.crypto`` (as ``localenv.prepare`` does
for the demo), and never leaves ``docker/secrets/``.

Re-running is safe: a generated value that already exists is kept (``--force``
regenerates everything; the databases and object stores created with the old values
must then be reset, see docker/README.md). The bundles built from those values
(database URLs, Airflow connection and variable files) are rewritten every time, so a
changed name here reaches every file at once.

Who gets what (docker-compose.yaml mounts each file only into the services that need it):

- ``cn_connections.json`` / ``cn_variables.json``: the China-side Celery workers
  (``cn_source``, ``us_landing`` as the exporter, ``export_ledger`` as its owner; the
  U.S. recipient's *public* key, the manifest-signing key, the pseudonymization key);
- ``us_connections.json`` / ``us_variables.json``: the U.S. worker only (``us_landing`` as
  the receiver; the U.S. recipient's *private* key, the CN manifest-signing public key);
- ``api_connections.json``: the API server (``export_ledger`` as a read-only role, for
  the export dashboard);
- the rest: PostgreSQL, Redis, the two MinIO stores and Airflow's own configuration.

An optional ``alert_connections.json`` written by hand in the same folder (Airflow
connection JSON, e.g. ``crossborder_slack``) is merged into both workers' connections.

Files are written read-only (0444) in a directory only its owner can open (0700): the
compose file bind-mounts each one into containers that run as other users (postgres,
redis, airflow), as Docker swarm does with its secrets.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE / "secrets"

# Names shared with docker-compose.yaml (tests/test_docker.py checks they agree).
POSTGRES_HOST = "postgres"
METADATA_DB, METADATA_USER = "airflow", "airflow"
LEDGER_DB, LEDGER_OWNER, LEDGER_READER = "export_ledger", "ledger", "ledger_reader"
REDIS_HOST = "redis"
CN_STORE = {"endpoint_url": "http://minio-cn:9000", "region_name": "cn-shanghai"}
US_STORE = {"endpoint_url": "http://minio-us:9000", "region_name": "us-east-1"}
CN_SOURCE_BUCKET = "shanghai-source"
# MinIO service users (access keys are names, not secrets, at most 20 characters; their
# secret keys are generated).
CN_SOURCE_READER = "airflow-cn-source"
US_LANDING_EXPORTER = "airflow-cn-exporter"
US_LANDING_RECEIVER = "airflow-us-receiver"
UI_ADMIN = "admin"
ALERT_CONNECTIONS = "alert_connections.json"  # optional, written by hand (docker/README.md)


def _token(n: int = 32) -> str:
    return secrets.token_urlsafe(n)


def _minio_secret() -> str:
    """40 characters: MinIO's longest secret key."""
    return _token(30)


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


class Secrets:
    """The secrets directory: generated values kept across runs, bundles rebuilt."""

    def __init__(self, folder: Path, force: bool = False) -> None:
        self.folder = folder
        self.force = force
        self.written: list[str] = []

    def write(self, name: str, data: str | bytes) -> None:
        """Replace ``name`` atomically (works on a read-only file) and make it 0444."""
        raw = data.encode() if isinstance(data, str) else data
        path = self.folder / name
        temp = path.with_name(f".{name}.tmp")
        temp.write_bytes(raw)
        temp.chmod(0o444)
        os.replace(temp, path)
        self.written.append(name)

    def value(self, name: str, make: Callable[[], str | bytes]) -> str:
        """A generated value: the existing file's content, else a new one."""
        path = self.folder / name
        if path.exists() and not self.force:
            return path.read_text()
        self.write(name, make())
        return path.read_text()

    def keypair(self, private_name: str, public_name: str, make: Callable[[], Any]) -> None:
        private, public = self.folder / private_name, self.folder / public_name
        if private.exists() and public.exists() and not self.force:
            return
        private_pem, public_pem = make()
        self.write(private_name, private_pem)
        self.write(public_name, public_pem)

    def text(self, name: str) -> str:
        return (self.folder / name).read_text()


def _service_user(store: Secrets, name: str, access_key: str) -> tuple[str, str]:
    """A MinIO service user: file line 1 the access key, line 2 its secret key."""
    content = store.value(name, lambda: f"{access_key}\n{_minio_secret()}\n")
    login, password = content.splitlines()[:2]
    return login, password


def _aws(login: str, password: str, store: dict[str, str], **extra: str) -> dict[str, Any]:
    return {
        "conn_type": "aws",
        "login": login,
        "password": password,
        "extra": {**store, **extra},
    }


def _postgres(login: str, password: str, database: str) -> dict[str, Any]:
    return {
        "conn_type": "postgres",
        "host": POSTGRES_HOST,
        "port": 5432,
        "login": login,
        "password": password,
        "schema": database,
    }


def _plugins_on_path() -> None:
    """``crossborder`` from the repository's plugins/ when not already importable."""
    try:
        import crossborder  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(HERE.parent / "plugins"))


def _ui_users() -> list[str]:
    """``admin`` and the CAC approvers of rules/cac_review.yaml (ids as Airflow knows them)."""
    _plugins_on_path()
    from crossborder.review import load_config

    return [UI_ADMIN, *(a["id"] for a in load_config().approvers)]


def generate(folder: Path, force: bool = False) -> list[str]:
    """Create or complete the secrets in ``folder``; the names written this time."""
    _plugins_on_path()
    from crossborder import crypto

    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    store = Secrets(folder, force=force)

    # Generated values (kept across runs).
    store.value("postgres_password", _token)
    airflow_db = store.value("airflow_db_password", _token)
    ledger_db = store.value("ledger_db_password", _token)
    reader_db = store.value("ledger_reader_db_password", _token)
    redis = store.value("redis_password", _token)
    store.value("airflow_fernet_key", _fernet_key)
    store.value("airflow_api_secret_key", _token)
    store.value("airflow_jwt_secret", lambda: _token(48))
    store.value("minio_cn_root_user", lambda: "cn-root-" + secrets.token_hex(4))
    store.value("minio_cn_root_password", _minio_secret)
    store.value("minio_us_root_user", lambda: "us-root-" + secrets.token_hex(4))
    store.value("minio_us_root_password", _minio_secret)
    cn_reader = _service_user(store, "minio_cn_source_reader", CN_SOURCE_READER)
    us_exporter = _service_user(store, "minio_us_cn_exporter", US_LANDING_EXPORTER)
    us_receiver = _service_user(store, "minio_us_us_receiver", US_LANDING_RECEIVER)
    store.keypair(
        "us_recipient_private.pem", "us_recipient_public.pem", crypto.generate_recipient_keypair
    )
    store.keypair(
        "manifest_signing_private.pem",
        "manifest_signing_public.pem",
        crypto.generate_signing_keypair,
    )
    store.value("pseudonymization.key", lambda: secrets.token_hex(32))
    ui_file = folder / "ui_passwords.json"
    known = {} if force or not ui_file.exists() else json.loads(ui_file.read_text())
    passwords = {user: known.get(user) or _token(12) for user in _ui_users()}
    if passwords != known:  # the approvers in rules/cac_review.yaml changed, or a first run
        store.write("ui_passwords.json", json.dumps(passwords, indent=2) + "\n")

    # Bundles (rebuilt from the values above).
    metadata = f"{METADATA_USER}:{quote(airflow_db, safe='')}@{POSTGRES_HOST}:5432/{METADATA_DB}"
    store.write("airflow_sql_alchemy_conn", f"postgresql+psycopg2://{metadata}")
    store.write("airflow_celery_result_backend", f"db+postgresql://{metadata}")
    broker = f"redis://:{quote(redis, safe='')}@{REDIS_HOST}:6379/0"
    store.write("airflow_celery_broker_url", broker)
    cn_connections = {
        "cn_source": _aws(*cn_reader, CN_STORE, bucket=CN_SOURCE_BUCKET),
        "us_landing": _aws(*us_exporter, US_STORE),
        "export_ledger": _postgres(LEDGER_OWNER, ledger_db, LEDGER_DB),
    }
    cn_variables = {
        "us_recipient_public_key": store.text("us_recipient_public.pem"),
        "manifest_signing_key": store.text("manifest_signing_private.pem"),
        "pseudonymization_key": store.text("pseudonymization.key"),
    }
    us_connections = {"us_landing": _aws(*us_receiver, US_STORE)}
    us_variables = {
        "us_recipient_private_key": store.text("us_recipient_private.pem"),
        "cn_manifest_public_key": store.text("manifest_signing_public.pem"),
    }
    api_connections = {"export_ledger": _postgres(LEDGER_READER, reader_db, LEDGER_DB)}
    # Alert channels (crossborder.notify: crossborder_slack, crossborder_smtp), written by
    # hand into alert_connections.json: both sides' workers get them.
    alerts_file = folder / ALERT_CONNECTIONS
    alerts = json.loads(alerts_file.read_text()) if alerts_file.exists() else {}
    for bundle in (cn_connections, us_connections):
        clash = set(alerts) & set(bundle)
        if clash:
            raise SystemExit(f"{alerts_file} may not redefine {', '.join(sorted(clash))}")
        bundle.update(alerts)
    for name, bundle in (
        ("cn_connections.json", cn_connections),
        ("cn_variables.json", cn_variables),
        ("us_connections.json", us_connections),
        ("us_variables.json", us_variables),
        ("api_connections.json", api_connections),
    ):
        store.write(name, json.dumps(bundle, indent=2, sort_keys=True) + "\n")
    return store.written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="docker/make_secrets.py",
        description="Generate the compose deployment's secrets (passwords, keys, bundles).",
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="default: docker/secrets")
    parser.add_argument(
        "--force", action="store_true", help="regenerate every value (reset the stores after)"
    )
    args = parser.parse_args(argv)
    written = generate(args.dir, force=args.force)
    print(f"secrets in {args.dir} ({len(written)} files written or refreshed)")
    print(f"UI logins: {', '.join(_ui_users())}; passwords in {args.dir / 'ui_passwords.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
