"""Cross-border export of Shanghai vehicle-data partitions to U.S. storage.

All business logic lives here as plain, typed functions; the DAG files in ``dags/``
only wire them into tasks. Only the modules that exist to talk to Airflow import it:
``airflow_glue`` (connections, variables, task wrapping), ``export_dag`` and
``receive_dag`` (the DAG factories).
"""
