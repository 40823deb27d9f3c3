#!/usr/bin/env bash
# One-time PostgreSQL setup: runs once, when the data volume is first initialised (the
# postgres image runs /docker-entrypoint-initdb.d/ only then). Passwords come from the
# secret files, through psql's \getenv: never on a command line, never in this file.
#
#   airflow        Airflow's metadata database (and the Celery result backend), owner airflow
#   export_ledger  the export ledger, owner ledger (the China-side workers write it);
#                  ledger_reader may only read it (the export dashboard in the API server)
#
# Neither role can connect to the other's database: tasks never use Airflow's own
# metadata database (DESIGN.md, "The ledger"). The ledger's tables are created by the
# airflow-init service (docker/init_ledger.py), as ledger.
set -euo pipefail

SECRETS_DIR="${SECRETS_DIR:-/run/secrets}"
secret() { tr -d '\n' < "$SECRETS_DIR/$1"; }

AIRFLOW_DB_PASSWORD="$(secret airflow_db_password)" \
LEDGER_DB_PASSWORD="$(secret ledger_db_password)" \
LEDGER_READER_DB_PASSWORD="$(secret ledger_reader_db_password)" \
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv ledger_password LEDGER_DB_PASSWORD
\getenv reader_password LEDGER_READER_DB_PASSWORD

CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;

CREATE ROLE ledger LOGIN PASSWORD :'ledger_password';
CREATE ROLE ledger_reader LOGIN PASSWORD :'reader_password';
CREATE DATABASE export_ledger OWNER ledger;
REVOKE ALL ON DATABASE export_ledger FROM PUBLIC;
GRANT CONNECT ON DATABASE export_ledger TO ledger_reader;

\connect export_ledger
GRANT USAGE ON SCHEMA public TO ledger_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE ledger IN SCHEMA public GRANT SELECT ON TABLES TO ledger_reader;
SQL
