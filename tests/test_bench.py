"""`make bench` end to end on a small partition: the three phases run in their own
processes against a loopback S3 API, and the table and the JSON agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from crossborder.policy import REPO_ROOT

PIPELINE_STEPS = [
    "wait_for_partition", "extract", "validate", "anonymize", "verify", "classify",
    "plan_upload", "encrypt+upload", "manifest",
]  # fmt: skip
PHASES = ("pipeline", "floor", "suites")


def test_bench_times_pipeline_floor_and_suites_and_writes_json(tmp_path):
    results = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "scripts/bench.py", "--rows", "30000", "--json", str(results)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "plugins")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = json.loads(results.read_text())
    assert (result["dataset"], result["rows"]) == ("vehicle_telemetry", 30_000)
    phases = {phase: [s["step"] for s in result[phase]["steps"]] for phase in PHASES}
    assert phases == {
        "pipeline": PIPELINE_STEPS,
        "floor": ["read+encrypt", "upload"],
        "suites": ["import GX", "raw suite", "anonymized suite"],
    }
    totals = {}
    for phase in PHASES:
        steps = result[phase]["steps"]
        assert all(s["seconds"] > 0 and s["peak_rss"] > 0 for s in steps)
        totals[phase] = sum(s["seconds"] for s in steps)
    assert result["ratio"] == totals["pipeline"] / totals["floor"]
    assert result["suites_ratio"] == totals["suites"] / totals["floor"]
    assert totals["suites"] < totals["pipeline"]  # the suites are a part of the pipeline
    assert f"ratio pipeline/floor: {result['ratio']:.2f}" in done.stdout
    assert f"ratio suites/floor: {result['suites_ratio']:.2f}" in done.stdout
    for step in PIPELINE_STEPS:
        assert f"  {step} " in done.stdout
