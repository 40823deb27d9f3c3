"""Cross-border export of Shanghai vehicle-data partitions to U.S. storage.

All business logic lives here as plain, typed functions; the DAG files in ``dags/``
only wire them into tasks. Nothing in this package imports Airflow except the modules
that exist to talk to it (``airflow_glue``, ``alerts``).
"""
