"""`make bench`: the daily export's cost next to the raw-copy floor, measured in one run.

    PYTHONPATH=plugins .venv/bin/python scripts/bench.py [--rows 5000000 [20000000 ...]]
        [--json bench-results.json]

For each size, a vehicle_telemetry partition is generated (not timed), then two fresh
processes run one after the other on the same files and the same S3 API (moto server
mode on loopback, in this process, so the stand-in's memory is not counted):

- **floor**: read each file, encrypt it in the same message format for the same
  recipient, upload it with the same transfer settings; no parsing, no checks;
- **pipeline**: every step the DAG runs, through the project's own step functions
  (`crossborder.steps`), each timed;
- **suites**: what Great Expectations alone costs the pipeline: its import, then the raw
  suite on the source files and the anonymized suite on the staged ones, on the file
  workers as in validate and verify (no partition checks, no reports). Its ratio to the
  floor is a bound: no pipeline that runs these suites on every row gets below it.

Each step reports its peak memory: the process's own (reset per step, as each task runs
in its own process under Airflow) or, if larger, the process with its per-file worker
processes (``CROSSBORDER_FILE_WORKERS``). The table gives per-step seconds, rows/s, MB/s
(of the day's partition as delivered), shares, and the ratio pipeline/floor, the
headline figure; absolute seconds depend on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

DATASET = "vehicle_telemetry"
DAY = date(2026, 11, 23)
RUN_ID = "bench"
MB = 1_000_000


def _status_bytes(pid: int | str, field: str, name: str = "status") -> int:
    """A memory figure (kB) from /proc/<pid>/status or smaps_rollup, in bytes; 0 if gone."""
    try:
        lines = Path(f"/proc/{pid}/{name}").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return 0  # a worker that has just exited
    return next((int(ln.split()[1]) * 1024 for ln in lines if ln.startswith(field)), 0)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found + [grandchild for child in found for grandchild in _children(child)]


class PeakMemory:
    """Peak memory of this process and its worker processes during a step.

    This process's own peak comes from Linux's VmHWM, reset when the step starts (as if
    it ran in its own task process); the workers' memory is sampled every 20 ms as PSS,
    which splits the pages a forked worker shares with its parent instead of counting
    them twice. The step's peak is the larger of the two.
    """

    def __init__(self) -> None:
        self.sampled = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        me = os.getpid()
        while not self._stop.wait(0.02):
            pids = [me, *_children(me)]
            total = sum(_status_bytes(p, "Pss:", "smaps_rollup") for p in pids)
            self.sampled = max(self.sampled, total)

    @property
    def peak(self) -> int:
        return max(self.sampled, _status_bytes("self", "VmHWM:"))


def _release_free_memory() -> None:
    """Hand memory the last step freed back to the system, so the next step's peak starts
    from what is still alive, as in a task process of its own (minus the imports)."""
    import ctypes
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


class Clock:
    """Seconds per step, in order, and the peak memory during each."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def time(self, name: str, action: Callable[[], Any]) -> Any:
        _release_free_memory()
        with PeakMemory() as memory:
            started = time.perf_counter()
            result = action()
            seconds = time.perf_counter() - started
        self.steps.append({"step": name, "seconds": seconds, "peak_rss": memory.peak})
        return result

    @property
    def peak_rss(self) -> int:
        return max(step["peak_rss"] for step in self.steps)


def floor(env: Any) -> Clock:
    """Read, encrypt and upload the partition's files as they are."""
    from crossborder import crypto
    from crossborder.landing import TransferSettings
    from crossborder.localenv import US_BUCKET

    clock, s3, transfer = Clock(), env.s3_client(), TransferSettings()
    public = env.key("us_recipient_public.pem")
    work = env.root / "floor"
    work.mkdir(exist_ok=True)

    sources = _partition_files(env.source)
    encrypted = [work / f"{path.name}.encrypted" for path in sources]

    def encrypt_all() -> None:
        for path, target in zip(sources, encrypted, strict=True):
            crypto.encrypt_file(path, target, public)

    def upload_all() -> None:
        extra = {"ChecksumAlgorithm": "SHA256", "ContentType": "application/octet-stream"}
        for path in encrypted:
            s3.upload_file(
                str(path), US_BUCKET, f"floor/{path.name}",
                ExtraArgs=extra, Config=transfer.config(path.stat().st_size),
            )  # fmt: skip
            path.unlink()

    # Two steps so the encryption rate shows on its own; both run on one core.
    clock.time("read+encrypt", encrypt_all)
    clock.time("upload", upload_all)
    return clock


def pipeline(env: Any) -> Clock:
    """Every step of the DAG's cleared route, as its tasks call them."""
    from crossborder import steps

    clock, cfg, day = Clock(), env.settings(), str(DAY)
    # One S3 client for all parts, as the floor has and as each upload task process has.
    cfg = dataclasses.replace(cfg, s3_client=functools.cache(cfg.s3_client))
    clock.time(
        "wait_for_partition", lambda: steps.partition_ready(cfg, DATASET, day, RUN_ID, "01:30")
    )
    extracted = clock.time("extract", lambda: steps.extract(cfg, DATASET, day, RUN_ID))
    quality = clock.time("validate", lambda: steps.validate(cfg, extracted, RUN_ID))
    staged = clock.time("anonymize", lambda: steps.anonymize(cfg, extracted, RUN_ID))
    verification = clock.time("verify", lambda: steps.verify(cfg, staged, RUN_ID))
    decision = clock.time(
        "classify",
        lambda: steps.decide(cfg, DATASET, day, RUN_ID, quality, staged, verification),
    )
    if decision["route"] != "cleared":
        raise SystemExit(f"route {decision['route']}: nothing to upload, the run is not comparable")
    parts = clock.time("plan_upload", lambda: steps.plan_upload(cfg, staged, decision))
    objects = clock.time("encrypt+upload", lambda: [steps.upload_part(cfg, p) for p in parts])
    clock.time(
        "manifest",
        lambda: steps.publish(
            cfg, DATASET, day, RUN_ID, objects, quality, staged, verification, decision,
            extracted,
        ),
    )  # fmt: skip
    return clock


def suites(env: Any) -> Clock:
    """The Great Expectations import and both suites over every file, nothing else."""
    import importlib

    clock = Clock()
    clock.time("import GX", lambda: importlib.import_module("great_expectations"))
    clock.time("raw suite", functools.partial(_suite_on_files, "raw", env.source))
    clock.time("anonymized suite", functools.partial(_suite_on_files, "anonymized", env.staging))
    return clock


def _suite_on_files(stage: str, root: Path) -> None:
    from crossborder import quality
    from crossborder.parallel import map_files

    validation = quality.validation_definition(quality.load_suite(DATASET, stage))
    parameters = quality.day_window(str(DAY))
    files = [str(path) for path in _partition_files(root)]
    if not files:  # the staged files are the pipeline's: timing nothing would prove nothing
        raise SystemExit(f"no {stage} files under {root}")
    map_files(lambda file: quality.run_suite(validation, file, parameters)[1], files)


def _partition_files(root: Path) -> list[Path]:
    from crossborder.extract import partition_path

    return sorted(partition_path(root, DATASET, DAY).glob("part-*.parquet"))


PHASES = {"floor": floor, "pipeline": pipeline, "suites": suites}  # suites read the staged files


def _child(phase: str, root: Path, endpoint: str) -> None:
    from crossborder.localenv import LocalEnv

    clock = PHASES[phase](LocalEnv(root, endpoint))
    print(json.dumps({"steps": clock.steps, "peak_rss": clock.peak_rss}))


def _run_phase(phase: str, root: Path, endpoint: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--root", str(root), "--endpoint", endpoint],
        capture_output=True,
        text=True,
        env={**os.environ, "CROSSBORDER_RULES_FILE": str(_bench_rules(root))},
    )
    if done.returncode != 0:
        raise SystemExit(f"the {phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _bench_rules(root: Path) -> Path:
    """The real rules with the yearly personal-data thresholds out of reach: a day of 20M
    telemetry rows has ~200,000 vehicles, which the real rules send to CAC review, and the
    benchmark times the cleared route. Counting the subjects costs the same either way."""
    from crossborder.policy import REPO_ROOT

    text = (REPO_ROOT / "rules" / "export_rules.yaml").read_text(encoding="utf-8")
    raised = text.replace("{more_than: 100000,", "{more_than: 1000000000,")
    raised = raised.replace("{at_least: 1000000,", "{at_least: 1000000000,")
    if raised.count("1000000000") != 2:
        raise SystemExit("rules/export_rules.yaml changed: update the benchmark's thresholds")
    path = root / "bench_rules.yaml"
    path.write_text(raised, encoding="utf-8")
    return path


def measure(rows: int) -> dict[str, Any]:
    """Generate a partition of ``rows`` and run the floor, then the pipeline, on it."""
    from crossborder import synthetic
    from crossborder.localenv import LocalEnv, start_s3_server

    root = Path(tempfile.mkdtemp(prefix="bench-"))
    server, endpoint = start_s3_server()
    try:
        env = LocalEnv(root, endpoint)
        env.prepare()
        summary = synthetic.generate_partition(env.source, DATASET, DAY, rows=rows)
        size = sum(p.stat().st_size for p in _partition_files(env.source))
        result = {"dataset": DATASET, "rows": rows, "files": summary.files, "bytes": size}
        for phase in PHASES:
            result[phase] = _run_phase(phase, root, endpoint)
        result["ratio"] = _total(result["pipeline"]) / _total(result["floor"])
        result["suites_ratio"] = _total(result["suites"]) / _total(result["floor"])
        return result
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _total(phase: dict[str, Any]) -> float:
    return sum(s["seconds"] for s in phase["steps"])


def table(result: dict[str, Any]) -> str:
    rows, size = result["rows"], result["bytes"]
    lines = [
        f"{result['dataset']}: {rows:,} rows, {result['files']} files, {size / MB:,.0f} MB",
        f"  {'step':<20} {'seconds':>8} {'share':>7} {'rows/s':>12} {'MB/s':>8} {'peak mem':>9}",
    ]
    for phase in ("pipeline", "floor", "suites"):
        total = _total(result[phase])
        for step in result[phase]["steps"]:
            seconds = step["seconds"]
            rate = rows / seconds if seconds else float("inf")
            lines.append(
                f"  {step['step']:<20} {seconds:8.2f} {seconds / total:7.1%} {rate:12,.0f} "
                f"{size / MB / seconds if seconds else float('inf'):8.1f} "
                f"{step['peak_rss'] / 2**30:7.2f} G"
            )
        peak = result[phase]["peak_rss"] / 2**30
        lines.append(
            f"  {phase.upper() + ' total':<20} {total:8.2f} {'':>7} {rows / total:12,.0f} "
            f"{size / MB / total:8.1f} {peak:7.2f} G"
        )
    lines.append(f"  ratio pipeline/floor: {result['ratio']:.2f}")
    lines.append(
        f"  ratio suites/floor: {result['suites_ratio']:.2f} "
        "(GX import and suites alone: no pipeline running them gets below this)"
    )
    lines.append("  (rules: yearly personal-data thresholds raised so the day is cleared)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[5_000_000])
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"))
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # a measured child process
        _child(args.phase, args.root, args.endpoint)
        return
    results = []
    for rows in args.rows:
        results.append(measure(rows))
        print(table(results[-1]), flush=True)
    if len(results) > 1:
        base = results[0]["pipeline"]["peak_rss"]
        for r in results[1:]:
            print(
                f"pipeline peak memory at {r['rows']:,} rows / at {results[0]['rows']:,} rows: "
                f"{r['pipeline']['peak_rss'] / base:.2f}"
            )
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
