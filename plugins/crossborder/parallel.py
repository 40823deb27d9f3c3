"""A partition's files, several at a time, in forked worker processes.

The heavy per-file work (Great Expectations suites, PII scans, staging) is Python and
pandas that holds the GIL, so threads would not use a second core; processes do. Workers
are forked, so they start in milliseconds with everything the parent has loaded (the
suite, the policy, the key) and nothing is pickled but the items and the results.
``map_files`` gives each item a process of its own (its memory is handed back when it
ends); ``map_runs`` gives each worker a run of items, for work that reuses what the
previous item left (anonymize's pseudonyms).

``CROSSBORDER_FILE_WORKERS`` sets how many (default: the cores this process may use);
set it to 1 where a Celery worker already runs one task per core.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

WORKERS_ENV = "CROSSBORDER_FILE_WORKERS"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_job: Callable[[Any], Any] | None = None  # what a forked worker runs; set during map_files


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


def map_files(
    function: Callable[[Item], Result], items: Sequence[Item], workers: int | None = None
) -> list[Result]:
    """``[function(item) for item in items]``, on up to ``workers`` processes, in order.

    Each item runs in a process of its own, forked when a worker slot frees up. A worker
    kept for several files held on to what earlier files had used (a 1M-row suite left
    0.3 GiB behind), so a fresh process per item keeps the peak at one item's needs.

    The first failing item's exception is raised here once the items already running
    have finished; items not yet started are never started. A step fails as a whole, as
    it would in sequence.
    """
    global _job
    workers = min(file_workers() if workers is None else workers, len(items))
    if workers <= 1:
        return [function(item) for item in items]
    if _job is not None:
        raise RuntimeError("map_files does not nest")
    _job = function  # forked workers inherit it: closures need no pickling
    try:
        with _may_start_children():
            return _fork_each(items, workers)
    finally:
        _job = None


def _fork_each(items: Sequence[Any], workers: int) -> list[Any]:
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("fork")
    results: list[Any] = [None] * len(items)
    waiting = list(enumerate(items))[::-1]  # popped from the end: in order
    running: dict[Any, tuple[int, Any]] = {}  # a worker's result pipe -> (index, process)
    failure: BaseException | None = None
    try:
        while running or (waiting and failure is None):
            while waiting and failure is None and len(running) < workers:
                index, item = waiting.pop()
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_work, args=(item, send), daemon=True)
                process.start()
                send.close()  # the worker holds the only sending end: EOF if it dies
                running[receive] = (index, process)
            for receive in wait(list(running)):
                index, process = running.pop(receive)
                results[index], error = _receive(receive, items[index], process)
                failure = failure or error
    finally:
        for receive, (_, process) in running.items():  # only when interrupted
            process.terminate()
            process.join()
            receive.close()
    if failure is not None:
        raise failure
    return results


def _work(item: Any, send: Any) -> None:
    """In the forked worker: run the job on one item and send back its result or error."""
    import traceback

    assert _job is not None, "a worker runs only inside map_files"
    _stop_with_the_step()
    try:
        outcome: tuple[Any, ...] = (_job(item),)
    except BaseException as exc:  # handed to the parent, raised there
        outcome = (None, exc, traceback.format_exc())
    try:
        send.send(outcome)
    except Exception as exc:  # unpicklable result or error: nothing was sent
        error = RuntimeError(f"the worker's outcome could not be sent back: {exc!r}")
        send.send((None, error, traceback.format_exc()))


def _stop_with_the_step() -> None:
    """A worker must not outlive its step. Airflow's task runner leaves forked children a
    SIGTERM handler that ignores the signal, so the default comes back (``map_files``
    terminates its workers when it is interrupted); and a task process that is killed
    takes its workers with it (Linux's parent-death signal) instead of orphaning them."""
    import ctypes
    import multiprocessing
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not sys.platform.startswith("linux"):  # a developer's machine: no parent-death signal
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before the line above
        os._exit(1)


def _receive(receive: Any, item: Any, process: Any) -> tuple[Any, BaseException | None]:
    """A finished worker's (result, None) or (None, error), its traceback as the cause."""
    try:
        outcome = receive.recv()
    except EOFError:  # it ended without sending anything
        outcome = None
    finally:
        receive.close()
    process.join()
    if outcome is None:
        return None, RuntimeError(f"the worker for {item!r} died (exit code {process.exitcode})")
    if len(outcome) == 1:
        return outcome[0], None
    _, error, where = outcome
    error.__cause__ = WorkerTraceback(where)
    return None, error


class WorkerTraceback(Exception):
    """Where an error was raised in a worker: the cause of the error raised here."""

    def __str__(self) -> str:
        return f"\n{self.args[0]}"


def map_runs(
    function: Callable[[Item], Result], items: Sequence[Item], workers: int | None = None
) -> list[Result]:
    """``map_files``, but each worker process takes a contiguous run of the items in turn,
    so what one item leaves in the process (a memo of pseudonyms) serves the next."""
    workers = min(file_workers() if workers is None else workers, len(items)) or 1
    runs = [
        items[len(items) * w // workers : len(items) * (w + 1) // workers] for w in range(workers)
    ]
    done = map_files(lambda run: [function(item) for item in run], runs, workers)
    return [result for results in done for result in results]


def run_jobs(jobs: Sequence[Callable[[], Result]], workers: int | None = None) -> list[Result]:
    """Different jobs (a file's suite, a whole-partition check) on the same workers; results
    in the jobs' order. Callers list the longest first, so no core idles at the end."""
    return map_files(lambda index: jobs[index](), range(len(jobs)), workers)


@contextmanager
def _may_start_children() -> Iterator[None]:
    """Celery runs each task inside a daemonic pool process, and multiprocessing refuses to
    start children there (a daemon's children could be orphaned). Ours are joined before
    ``map_files`` returns, so the flag is lifted while it runs."""
    import multiprocessing

    config = multiprocessing.current_process()._config  # no public setter
    daemon = config.get("daemon", False)
    config["daemon"] = False
    try:
        yield
    finally:
        config["daemon"] = daemon
