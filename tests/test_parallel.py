"""Per-file worker processes: results in order, errors as raised, the setting checked."""

from __future__ import annotations

import os
import pickle
import sys
import time
from functools import partial

import pytest

from crossborder import errors
from crossborder.parallel import WORKERS_ENV, file_workers, map_files, map_runs, run_jobs


def test_results_come_back_in_order_from_other_processes_at_most_two_at_once():
    offset = 1000  # a closure: forked workers inherit it, nothing is pickled but items

    def work(item: int) -> tuple[int, int, float, float]:
        started = time.monotonic()  # one clock for all processes
        time.sleep(0.05)  # long enough that both workers take items
        return item + offset, os.getpid(), started, time.monotonic()

    found = map_files(work, list(range(12)), workers=2)
    assert [value for value, *_ in found] == [i + 1000 for i in range(12)]
    assert os.getpid() not in {pid for _, pid, *_ in found}
    running_at_each_start = [
        sum(start <= began < end for _, _, start, end in found) for _, _, began, _ in found
    ]
    assert max(running_at_each_start) == 2


def test_each_item_gets_a_fresh_process_so_memory_of_one_is_not_kept_for_the_next():
    def work(item: int) -> tuple[int, bool]:
        seen = getattr(work, "seen", False)  # set only in a process that ran an item before
        work.seen = True
        return os.getpid(), seen

    found = map_files(work, list(range(6)), workers=2)
    assert len({pid for pid, _ in found}) == 6
    assert not any(seen for _, seen in found)


def test_runs_of_items_share_a_process_each_in_order():
    def work(item: int) -> tuple[int, int, list[int]]:
        work.seen = [*getattr(work, "seen", []), item]  # what this process ran before
        return item, os.getpid(), work.seen

    found = map_runs(work, list(range(7)), workers=2)
    assert [item for item, *_ in found] == list(range(7))
    assert len({pid for _, pid, _ in found}) == 2 and os.getpid() not in {p for _, p, _ in found}
    assert [seen for *_, seen in found][-1] == [3, 4, 5, 6]  # a contiguous run, in turn


def test_one_worker_or_one_item_stays_in_this_process():
    assert map_files(lambda _: os.getpid(), [1, 2, 3], workers=1) == [os.getpid()] * 3
    assert map_files(lambda _: os.getpid(), ["only"], workers=4) == [os.getpid()]
    assert map_files(lambda _: 1, [], workers=4) == []


def test_a_failing_item_fails_the_map_with_its_typed_error():
    def work(item: str) -> str:
        if item == "part-00001.parquet":
            error = errors.PartitionInvalid("no event_id", dataset="fleet", day="2026-11-23",
                                            file=item)  # fmt: skip
            error.result = {"rows": 3}
            raise error
        return item

    with pytest.raises(errors.PartitionInvalid) as raised:
        map_files(work, ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"], 2)
    error = raised.value
    assert (error.dataset, error.day, error.file) == ("fleet", "2026-11-23", "part-00001.parquet")
    assert error.detail == "no event_id" and error.result == {"rows": 3}
    assert str(error) == "dataset fleet, day 2026-11-23, file part-00001.parquet: no event_id"


def test_after_a_failure_running_items_finish_and_waiting_ones_never_start(tmp_path):
    def work(item: int) -> int:
        if item == 0:
            raise ValueError("file 0 is bad")
        time.sleep(0.3)  # still running when item 0 fails
        (tmp_path / f"done-{item}").touch()
        return item

    with pytest.raises(ValueError, match="file 0 is bad") as raised:
        map_files(work, list(range(6)), workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done-1"]
    assert "in work" in str(raised.value.__cause__)  # the worker's traceback


def test_a_worker_that_dies_fails_the_map_and_names_the_item():
    def work(item: str) -> str:
        if item == "part-00001.parquet":
            os._exit(9)  # as if killed, e.g. out of memory
        return item

    with pytest.raises(RuntimeError, match=r"worker for 'part-00001.parquet' died \(exit code 9"):
        map_files(work, ["part-00000.parquet", "part-00001.parquet"], workers=2)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def _wait_for(condition, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _sleep_and_note_pid(folder):
    def work(item: int) -> int:
        (folder / f"{os.getpid()}.pid").touch()
        time.sleep(60)
        return item

    return work


def test_an_interrupted_map_stops_its_workers_even_if_sigterm_was_ignored(tmp_path):
    import signal

    def interrupt(*_):
        raise TimeoutError("the task was stopped")

    ignore_term = signal.signal(signal.SIGTERM, lambda *_: None)  # as Airflow's runner leaves it
    alarm = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            map_files(_sleep_and_note_pid(tmp_path), [0, 1, 2], workers=2)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, alarm)
        signal.signal(signal.SIGTERM, ignore_term)
    assert time.monotonic() - started < 10  # not the items' 60 s
    pids = [int(p.stem) for p in tmp_path.glob("*.pid")]
    assert len(pids) == 2 and not any(_alive(pid) for pid in pids)


def _map_in_a_child(folder) -> None:
    map_files(_sleep_and_note_pid(folder), [0, 1], workers=2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's parent-death signal")
def test_workers_die_with_a_killed_task_process(tmp_path):
    import multiprocessing
    import signal

    task = multiprocessing.get_context("fork").Process(target=_map_in_a_child, args=(tmp_path,))
    task.start()
    assert _wait_for(lambda: len(list(tmp_path.glob("*.pid"))) == 2)
    os.kill(task.pid, signal.SIGKILL)  # as the supervisor's last resort
    task.join()
    pids = [int(p.stem) for p in tmp_path.glob("*.pid")]
    assert _wait_for(lambda: not any(_alive(pid) for pid in pids))


@pytest.mark.parametrize("kind", errors.CrossborderError.__subclasses__())
def test_every_error_type_survives_pickling(kind):
    error = kind("what is wrong", dataset="d", day="2026-11-23", file="f.parquet")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is kind and str(copy) == str(error)
    assert (copy.dataset, copy.day, copy.file, copy.detail) == ("d", "2026-11-23", "f.parquet",
                                                                "what is wrong")  # fmt: skip


def test_the_worker_setting_is_checked(monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert file_workers() == 3
    monkeypatch.delenv(WORKERS_ENV)
    assert file_workers() == len(os.sched_getaffinity(0))
    for bad in ("0", "two"):
        monkeypatch.setenv(WORKERS_ENV, bad)
        with pytest.raises(ValueError, match=WORKERS_ENV):
            file_workers()


def _in_a_daemon(queue) -> None:
    queue.put(map_files(lambda item: (item, os.getpid()), [1, 2, 3], workers=2))


def test_works_inside_a_daemonic_process_as_under_celery():
    # Celery's prefork pool runs tasks in daemonic processes; multiprocessing refuses to
    # start children there unless map_files lifts that for its own, joined workers.
    import multiprocessing

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    daemon = context.Process(target=_in_a_daemon, args=(queue,), daemon=True)
    daemon.start()
    found = queue.get(timeout=60)
    daemon.join(timeout=60)
    assert daemon.exitcode == 0
    assert [item for item, _ in found] == [1, 2, 3]
    assert daemon.pid not in {pid for _, pid in found}  # run by the daemon's own workers


def test_different_jobs_share_one_pool_and_keep_their_order():
    jobs = [partial(pow, 2, 10), partial(str.upper, "file"), partial(sum, [1, 2, 3])]
    assert run_jobs(jobs, workers=2) == [1024, "FILE", 6]
