"""Airflow DAGs of the U.S. side: receive exported partitions; reconcile receipts in China."""

from crossborder.receive_dag import build_receive_dags

globals().update(build_receive_dags())
