"""Airflow DAG of the U.S. side: receive exported partitions and write receipts."""

from crossborder.receive_dag import build_receive_dag

us_receive = build_receive_dag()
