"""Cluster policy of the compose deployment ($AIRFLOW_HOME/config/airflow_local_settings.py).

The U.S. side's DAGs (ids starting with ``us_``, e.g. ``us_receive``) run on the Celery
queue ``us``, which only ``airflow-worker-us`` serves: the one worker that holds the U.S.
recipient's private key. Every other task stays on the default queue of the China-side
workers, which hold no key able to decrypt what they send (DESIGN.md, "Encryption").
A China-side task asking for the ``us`` queue is refused when its DAG is parsed.

Applied by the dag-processor to every task it parses; DAG files stay free of deployment
details (the same DAGs run unchanged on ``airflow standalone``).
"""

from __future__ import annotations

from typing import Any

US_DAG_PREFIX = "us_"
US_QUEUE = "us"


def task_policy(task: Any) -> None:
    if task.dag_id.startswith(US_DAG_PREFIX):
        task.queue = US_QUEUE
    elif task.queue == US_QUEUE:
        from airflow.exceptions import AirflowClusterPolicyViolation

        raise AirflowClusterPolicyViolation(
            f"task {task.task_id} of {task.dag_id}: only U.S.-side DAGs ({US_DAG_PREFIX}*) "
            f"may run on the {US_QUEUE!r} queue"
        )
