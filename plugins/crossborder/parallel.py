"""A partition's files, several at a time, in forked worker processes.

The heavy per-file work (Great Expectations suites, PII scans, staging) is Python and
pandas that holds the GIL, so threads would not use a second core; processes do. Workers
are forked, so they start in milliseconds with everything the parent has loaded (the
suite, the policy, the key) and nothing is pickled but the items and the results.

``CROSSBORDER_FILE_WORKERS`` sets how many (default: the cores this process may use);
set it to 1 where a Celery worker already runs one task per core.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

WORKERS_ENV = "CROSSBORDER_FILE_WORKERS"

_job: Callable[[Any], Any] | None = None  # what a forked worker runs; set while a pool lives


def file_workers() -> int:
    """How many files to process at once, from the environment or the usable cores."""
    configured = os.environ.get(WORKERS_ENV, "").strip()
    if not configured:
        return len(os.sched_getaffinity(0))
    try:
        workers = int(configured)
    except ValueError:
        raise ValueError(f"{WORKERS_ENV} must be a whole number, got {configured!r}") from None
    if workers < 1:
        raise ValueError(f"{WORKERS_ENV} must be at least 1, got {workers}")
    return workers


def _run_job(item: Any) -> Any:
    assert _job is not None, "a worker runs only inside map_files"
    return _job(item)


def map_files(
    function: Callable[[Item], Result], items: Sequence[Item], workers: int | None = None
) -> list[Result]:
    """``[function(item) for item in items]``, on up to ``workers`` processes, in order.

    The first failing item's exception is raised here once the items already running
    have finished; items not yet started are cancelled. A step fails as a whole, as it
    would in sequence.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    global _job
    workers = min(file_workers() if workers is None else workers, len(items))
    if workers <= 1:
        return [function(item) for item in items]
    if _job is not None:
        raise RuntimeError("map_files does not nest")
    _job = function  # forked workers inherit it: closures need no pickling
    try:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        try:
            with _may_start_children():
                results = pool.map(_run_job, items)  # starts the workers, submits all items
            return list(results)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        _job = None


def run_jobs(jobs: Sequence[Callable[[], Result]], workers: int | None = None) -> list[Result]:
    """Different jobs (a file's suite, a whole-partition check) in one pool; results in the
    jobs' order. Callers list the longest first, so no core idles at the end."""
    return map_files(lambda index: jobs[index](), range(len(jobs)), workers)


@contextmanager
def _may_start_children() -> Iterator[None]:
    """Celery runs each task inside a daemonic pool process, and multiprocessing refuses to
    start children there (a daemon's children could be orphaned). Ours are joined before
    ``map_files`` returns, so the flag is lifted while they start."""
    import multiprocessing

    config = multiprocessing.current_process()._config  # no public setter
    daemon = config.get("daemon", False)
    config["daemon"] = False
    try:
        yield
    finally:
        config["daemon"] = daemon
