"""DAG integrity, Astro/Mozilla style: every DAG imports, parses fast and follows our rules."""

import os
import subprocess
import sys
import textwrap

import pytest

from crossborder.policy import REPO_ROOT, policy_files

EXPECTED_EXPORT_DAGS = {f"cn_export_{p.stem}" for p in policy_files()}
ALLOWED_TAGS = {"cn-export", "us-receive", "cac-review", "active", "draft", "invalid"} | {
    p.stem for p in policy_files()
}
HEAVY_MODULES = (
    "pandas",
    "pyarrow",
    "great_expectations",
    "boto3",
    "botocore",
    "s3transfer",
    "aws_encryption_sdk",
    "moto",
)

# Parse the DAG folder in a fresh interpreter, as Airflow's DAG processor does.
PARSE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from airflow.dag_processing.dagbag import DagBag
    started = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1])
    elapsed = time.perf_counter() - started
    heavy = [m for m in sys.argv[2].split(",") if m in sys.modules]
    dags = {
        d.dag_id: {
            "tags": sorted(d.tags),
            "retries": [t.retries for t in d.tasks],
            "tasks": [t.task_id for t in d.tasks],
            "timezone": str(d.timezone),
            "callbacks": [
                [type(c).__name__ for c in t.on_failure_callback or []] for t in d.tasks
            ],
        }
        for d in bag.dags.values()
    }
    print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                      "seconds": elapsed, "heavy": heavy, "dags": dags}))
    """
)


def _parse(home, policies=None) -> dict:
    import json

    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "PYTHONPATH": str(REPO_ROOT / "plugins"),
    }
    if policies:
        env["CROSSBORDER_POLICIES_DIR"] = str(policies)
    out = subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, str(REPO_ROOT / "dags"), ",".join(HEAVY_MODULES)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    return _parse(tmp_path_factory.mktemp("airflow-home"))


def test_every_dag_file_imports_without_errors(parsed):
    assert parsed["errors"] == {}


def test_one_export_dag_per_policy_plus_review_and_receive_dags(parsed):
    assert set(parsed["dags"]) == EXPECTED_EXPORT_DAGS | {
        "us_receive",
        "cn_reconcile_receipts",
        "cn_deadlines",
        "cn_cac_review",
        "cn_cac_review_reminders",
    }


def test_dag_folder_parses_fast_without_heavy_imports(parsed):
    print(f"DAG folder parse time: {parsed['seconds']:.3f} s for {len(parsed['dags'])} DAGs")
    assert parsed["heavy"] == []
    assert parsed["seconds"] < 1.0


def test_tags_are_from_the_allow_list(parsed):
    for dag_id, info in parsed["dags"].items():
        assert info["tags"], dag_id
        assert set(info["tags"]) <= ALLOWED_TAGS, dag_id


# A sensor's timeout is final; a review gate's answer is a person's, never retried.
NOT_RETRIED = {"wait_for_partition", "first_approval", "second_approval"}


def test_tasks_retry_except_the_partition_sensor_and_the_review_gates(parsed):
    for dag_id, info in parsed["dags"].items():
        for task_id, retries in zip(info["tasks"], info["retries"], strict=True):
            expected = 0 if task_id in NOT_RETRIED else 2
            assert retries == expected, f"{dag_id}.{task_id}"


def test_every_task_alerts_on_failure_through_the_notifier(parsed):
    for dag_id, info in parsed["dags"].items():
        assert all(c == ["OnCallNotifier"] for c in info["callbacks"]), dag_id


def test_export_dags_run_on_shanghai_time(parsed):
    for dag_id in EXPECTED_EXPORT_DAGS:
        assert parsed["dags"][dag_id]["timezone"] == "Asia/Shanghai", dag_id


def test_a_broken_policy_file_does_not_take_the_other_dags_down(tmp_path):
    import shutil

    policies = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policies)
    (policies / "diagnostics.yaml").write_text("dataset: [unclosed", encoding="utf-8")
    result = _parse(tmp_path / "home", policies)
    assert result["errors"] == {}
    assert set(result["dags"]) >= EXPECTED_EXPORT_DAGS
    assert "invalid" in result["dags"]["cn_export_diagnostics"]["tags"]
    assert "active" in result["dags"]["cn_export_production_quality"]["tags"]
