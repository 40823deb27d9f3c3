"""Airflow DAGs for the daily Shanghai → U.S. export.

One `cn_export_<dataset>` DAG per file in `policies/`. Add a dataset by adding its policy
(and its expectation suite), never by editing this file.
"""

from crossborder.export_dag import build_all

globals().update(build_all())
