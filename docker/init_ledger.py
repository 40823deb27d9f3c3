"""Create (or upgrade) the export ledger's tables and let the read-only role read them.

Run by the compose service ``airflow-init`` after ``airflow db migrate``:

    python /opt/airflow/deploy/init_ledger.py --connections /run/secrets/cn_connections.json

It reads the ``export_ledger`` connection from the China-side connections file (the
ledger's owner), creates the tables with ``crossborder.ledger.connect`` (idempotent: it
also adds columns a newer version introduced), and grants SELECT on them to
``ledger_reader``, the role the API server's export dashboard connects as. The database
and both roles are created once by docker/postgres/init-databases.sh.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

READER_ROLE = "ledger_reader"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="init_ledger.py", description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=Path, required=True, help="connections JSON file")
    parser.add_argument("--reader", default=READER_ROLE, help="read-only role to grant SELECT")
    args = parser.parse_args(argv)

    import sqlalchemy as sa
    from airflow.secrets.local_filesystem import LocalFilesystemBackend

    from crossborder import ledger
    from crossborder.airflow_glue import ledger_url

    conn = LocalFilesystemBackend(connections_file_path=str(args.connections)).get_connection(
        "export_ledger"
    )
    if conn is None:
        parser.error(f"no connection export_ledger in {args.connections}")
    engine = ledger.connect(ledger_url(conn))
    try:
        with engine.begin() as db:
            if engine.dialect.name == "postgresql":
                reader = engine.dialect.identifier_preparer.quote(args.reader)
                db.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}"))
        tables = sorted(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    print(f"export ledger ready on {engine.url.render_as_string()}: tables {', '.join(tables)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
