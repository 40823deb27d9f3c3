"""Build-time check of the image (docker/Dockerfile runs it): fail the build, not the first
DAG run, when the DAGs do not import with the pinned dependencies or the cluster policy
does not route the U.S. side's tasks to the U.S. worker.

Parses the DAG folder as Airflow's dag-processor does (DagBag, with
$AIRFLOW_HOME/config/airflow_local_settings.py applied), on a throw-away AIRFLOW_HOME:
no database, no connection, no secret is needed.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path


def main() -> int:
    # Only $AIRFLOW_HOME/config may provide airflow_local_settings, not this script's folder.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    installed_home = Path(os.environ.get("AIRFLOW_HOME", "/opt/airflow"))
    dags_folder = installed_home / "dags"
    with tempfile.TemporaryDirectory(prefix="airflow-check-") as home:
        (Path(home) / "config").mkdir()
        shutil.copy(installed_home / "config" / "airflow_local_settings.py", Path(home) / "config")
        os.environ.update(
            AIRFLOW_HOME=home,
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
        )
        from airflow.dag_processing.dagbag import DagBag

        from crossborder.policy import policy_files

        bag = DagBag(dag_folder=str(dags_folder))
        problems = [f"{path}: {error}" for path, error in bag.import_errors.items()]
        expected = {f"cn_export_{p.stem}" for p in policy_files()} | {"us_receive"}
        problems += [f"DAG {d} missing" for d in sorted(expected - set(bag.dags))]
        for dag in bag.dags.values():
            for task in dag.tasks:
                want = "us" if dag.dag_id.startswith("us_") else "default"
                if task.queue != want:
                    problems.append(f"{dag.dag_id}.{task.task_id}: queue {task.queue!r}")
    if problems:
        print("image check failed:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    print(f"image check: {len(bag.dags)} DAGs parse; U.S.-side tasks on queue 'us'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
