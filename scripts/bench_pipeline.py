"""Time each step of the daily export on one generated partition, in one run.

    PYTHONPATH=plugins .venv/bin/python scripts/bench_pipeline.py [--rows 5000000]

Runs the project's own step functions (the ones the DAG tasks call) on a telemetry
partition against a real S3 API on loopback, and prints each step's seconds and its
share of the whole. Telemetry's real policy is still a draft, so the run uses a
bench-only policy that exports the non-personal columns unchanged (personal ones are
dropped): the same bytes flow through the same steps. Absolute seconds depend on the
machine; the shares are the figures to compare.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from crossborder import steps, synthetic
from crossborder.localenv import LocalEnv, start_s3_server
from crossborder.policy import REPO_ROOT

DATASET = "vehicle_telemetry"
DAY = date(2026, 11, 23)


def _bench_policy(folder: Path) -> None:
    """Telemetry's policy, active, with every personal column dropped."""
    text = (REPO_ROOT / "policies" / f"{DATASET}.yaml").read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines():
        if line.startswith("status:"):
            line = "status: active"
        elif "class: personal" in line or "class: sensitive_personal" in line:
            name = line.split(":")[0]
            line = f"{name}: {{class: personal, transform: drop}}"
        lines.append(line)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{DATASET}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _timed(timings: dict[str, float], name: str, action: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = action()
    timings[name] = time.perf_counter() - started
    return result


def run(rows: int, workdir: Path) -> dict[str, float]:
    server, endpoint = start_s3_server()
    try:
        env = LocalEnv(workdir, endpoint)
        env.prepare()
        synthetic.generate_partition(env.source, DATASET, DAY, rows=rows)
        _bench_policy(workdir / "policies")
        os.environ["CROSSBORDER_POLICIES_DIR"] = str(workdir / "policies")
        cfg, day, run_id, t = env.settings(), str(DAY), "bench", {}
        extracted = _timed(t, "extract", lambda: steps.extract(cfg, DATASET, day, run_id))
        quality = _timed(t, "validate", lambda: steps.validate(cfg, extracted, run_id))
        staged = _timed(t, "anonymize", lambda: steps.anonymize(cfg, extracted, run_id))
        decision = _timed(
            t, "classify", lambda: steps.decide(cfg, DATASET, day, run_id, quality, staged)
        )
        parts = _timed(t, "plan_upload", lambda: steps.plan_upload(cfg, staged, decision))
        objects = _timed(t, "encrypt+upload", lambda: [steps.upload_part(cfg, p) for p in parts])
        _timed(
            t,
            "publish",
            lambda: steps.publish(
                cfg, DATASET, day, run_id, objects, quality, staged, decision, extracted
            ),
        )
        assert decision["route"] == "cleared", decision
        return t
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    rows = parser.parse_args().rows
    workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        timings = run(rows, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    total = sum(timings.values())
    print(f"{DATASET}, {rows:,} rows: whole pipeline {total:.1f} s")
    for name, seconds in timings.items():
        print(f"  {name:<15} {seconds:8.2f} s  {seconds / total:6.1%}")


if __name__ == "__main__":
    main()
