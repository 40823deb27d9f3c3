"""Time each step of the daily export on one generated partition, in one run.

    PYTHONPATH=plugins .venv/bin/python scripts/bench_pipeline.py [--rows 5000000]

Runs the project's own step functions (the ones the DAG tasks call) on a telemetry
partition with its real policy against a real S3 API on loopback, and prints each
step's seconds, its share of the whole, rows per second and the process's peak
resident memory once the step is done. Absolute seconds depend on the machine; the
shares are the figures to compare.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from crossborder import steps, synthetic
from crossborder.localenv import LocalEnv, start_s3_server

DATASET = "vehicle_telemetry"
DAY = date(2026, 11, 23)


def _timed(timings: dict[str, tuple[float, int]], name: str, action: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = action()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    timings[name] = (time.perf_counter() - started, peak)
    return result


def run(rows: int, workdir: Path) -> dict[str, tuple[float, int]]:
    server, endpoint = start_s3_server()
    try:
        env = LocalEnv(workdir, endpoint)
        env.prepare()
        synthetic.generate_partition(env.source, DATASET, DAY, rows=rows)
        cfg, day, run_id, t = env.settings(), str(DAY), "bench", {}
        extracted = _timed(t, "extract", lambda: steps.extract(cfg, DATASET, day, run_id))
        quality = _timed(t, "validate", lambda: steps.validate(cfg, extracted, run_id))
        staged = _timed(t, "anonymize", lambda: steps.anonymize(cfg, extracted, run_id))
        verification = _timed(t, "verify", lambda: steps.verify(cfg, staged, run_id))
        decision = _timed(
            t,
            "classify",
            lambda: steps.decide(cfg, DATASET, day, run_id, quality, staged, verification),
        )
        if decision["route"] != "cleared":  # held for review: nothing to upload
            print(f"route {decision['route']}: the upload steps are not timed")
            return t
        parts = _timed(t, "plan_upload", lambda: steps.plan_upload(cfg, staged, decision))
        objects = _timed(t, "encrypt+upload", lambda: [steps.upload_part(cfg, p) for p in parts])
        _timed(
            t,
            "publish",
            lambda: steps.publish(
                cfg,
                DATASET,
                day,
                run_id,
                objects,
                quality,
                staged,
                verification,
                decision,
                extracted,
            ),
        )
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
    total = sum(seconds for seconds, _ in timings.values())
    print(f"{DATASET}, {rows:,} rows: whole pipeline {total:.1f} s")
    print(f"  {'step':<15} {'seconds':>8}  {'share':>6}  {'rows/s':>11}  peak RSS so far")
    for name, (seconds, peak) in timings.items():
        rate = rows / seconds if seconds else float("inf")
        print(
            f"  {name:<15} {seconds:8.2f}  {seconds / total:6.1%}  {rate:11,.0f}"
            f"  {peak / 2**30:.2f} GiB"
        )


if __name__ == "__main__":
    main()
