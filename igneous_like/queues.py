"""Queues by URL, insertion with progress, the in-process runner and the execute loop.

The queue itself is python-task-queue (FileQueue on a shared filesystem, or SQS). This
module adds what a worker fleet needs around it: lease renewal for long tasks, a failure
record per task (error and traceback, attempt count), and clean exit codes.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from igneous_like.errors import UserError
from igneous_like.progress import Progress, track

TASK_MODULE_PREFIX = "igneous_like."
EXIT_TASKS_FAILED = 3


# ---------------------------------------------------------------- URLs and opening


def normalize_queue_url(url: str) -> str:
    """fq://DIR (a bare path means fq://) or sqs://NAME; anything else is an error."""
    url = str(url).strip()
    if not url:
        raise UserError("empty queue URL: use fq://DIR or sqs://NAME")
    if url.startswith("sqs://"):
        name = url[len("sqs://") :].strip("/")
        if not name:
            raise UserError(f"bad queue URL {url!r}: sqs:// needs a queue name, e.g. sqs://my-queue")
        return "sqs://" + name
    if url.startswith("fq://"):
        path = url[len("fq://") :]
    elif "://" in url:
        raise UserError(f"bad queue URL {url!r}: use fq://DIR or sqs://NAME")
    else:
        path = url
    if not path:
        raise UserError(f"bad queue URL {url!r}: fq:// needs a directory")
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"bad queue URL {url!r}: {path} is a file, not a queue directory")
    return "fq://" + path


def open_queue(url: str, create: bool = True):
    """A TaskQueue for the URL; a FileQueue must already exist unless create is set."""
    url = normalize_queue_url(url)
    if url.startswith("fq://") and not create and not os.path.isdir(os.path.join(url[5:], "queue")):
        raise UserError(f"no queue at {url}: the directory has no FileQueue (was anything inserted?)")
    from taskqueue import TaskQueue

    from igneous_like import fq_checked

    try:
        tq = TaskQueue(url, progress=False)
    except Exception as exc:
        raise UserError(f"cannot open queue {url}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if url.startswith("fq://"):
        _ensure_counter(os.path.join(url[len("fq://") :], "insertions"))
        fq_checked.make_checked(tq)  # inserts write whole files; leases set unreadable ones aside
    return tq


def _ensure_counter(path: str) -> None:
    """task-queue reads the insertion counter with retries and backoff (about 2.5 s) when the
    file does not exist yet, as in every new queue; create it once, never clobbering."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write("0")


def fq_dir(tq) -> str | None:
    path = tq.qualified_path
    return path[len("fq://") :] if path.startswith("fq://") else None


# ---------------------------------------------------------------- failure records


def failures_url(tq, override: str | None = None) -> str | None:
    """Where failure records live: --failures / $IGNEOUS_LIKE_FAILURES (any storage URL), else
    beside a FileQueue. SQS has no room for them, so there only when one is given."""
    from igneous_like.layers import normalize_url

    chosen = override or os.environ.get("IGNEOUS_LIKE_FAILURES")
    if chosen:
        return normalize_url(chosen)
    base = fq_dir(tq)
    return f"file://{base}/failures" if base else None


def _record_key(tq, task) -> str:
    """A FileQueue task keeps its id; an SQS receipt handle changes on every delivery, so
    there the record is keyed by the task's content."""
    if fq_dir(tq):
        return str(task.id)
    import hashlib

    body = json.dumps([list(task.key), task.args, task.kwargs], sort_keys=True, default=str)
    return hashlib.sha1(body.encode()).hexdigest()


def record_failure(tq, task, exc: BaseException, url: str | None) -> int:
    """Remember a task's error and traceback; returns how often it has failed."""
    if url is None:
        return 1
    from cloudfiles import CloudFiles

    cf = CloudFiles(url)
    key = _record_key(tq, task)
    previous = cf.get_json(f"{key}.json") or {}
    record = {
        "id": key,
        "task": {"fn": list(task.key), "args": task.args, "kwargs": task.kwargs},
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(),
        "attempts": previous.get("attempts", 0) + 1,
        "gave_up": False,
        "time": time.time(),
    }
    cf.put_json(f"{key}.json", record)
    return record["attempts"]


def record_unreadable(found, url: str | None) -> None:
    """Keep a failure record of a task file a lease could not read (fq_checked.Unreadable). One
    set aside has no task to re-queue: it is recorded as given up, with the file it now is. One
    left leased (it may still be being written) is recorded like a failed task waiting out its
    lease, so nothing waits for it as for a running task; if it is whole when leased again and
    runs, its record is cleared as any task's is."""
    if url is None:
        return
    from cloudfiles import CloudFiles

    CloudFiles(url).put_json(f"{found.ident}.json", {
        "id": found.ident, "task": None, "file": found.moved_to or found.path,
        "error": f"unreadable task file: {found.error}", "traceback": "", "attempts": 1,
        "gave_up": found.moved_to is not None, "time": time.time(),
    })


def report_unreadable(tq, url: str | None) -> list:
    """Report, one line each, the task files the queue's last leases could not read, and record
    them; returns them (fq_checked.Unreadable)."""
    from igneous_like import fq_checked

    found = fq_checked.take_found(tq)
    for u in found:
        record_unreadable(u, url)
        if u.moved_to:
            print(f"ERROR unreadable task file {u.path}: {u.error}; moved to {u.moved_to}", file=sys.stderr, flush=True)
        else:
            print(f"WARNING unreadable task file {u.path}: {u.error}", file=sys.stderr, flush=True)
    return found


def give_up(tq, task, url: str | None) -> None:
    if url is None:
        return
    from cloudfiles import CloudFiles

    cf = CloudFiles(url)
    key = _record_key(tq, task)
    record = cf.get_json(f"{key}.json") or {}
    cf.put_json(f"{key}.json", {**record, "gave_up": True})


def clear_failure(tq, task, url: str | None) -> None:
    if url is not None:
        from cloudfiles import CloudFiles

        CloudFiles(url).delete(f"{_record_key(tq, task)}.json")


def list_failures(url: str | None) -> list[dict]:
    if url is None:
        return []
    from cloudfiles import CloudFiles

    cf = CloudFiles(url)
    names = sorted(n for n in cf.list() if n.endswith(".json"))
    return [r for r in (cf.get_json(n) for n in names) if r]


# ---------------------------------------------------------------- producing


def as_function_tasks(tasks: Iterable) -> Iterator:
    """partial(fn, ...) -> task-queue FunctionTask, checking the signature once per function.

    task-queue otherwise binds inspect.signature for every task, which is most of the CPU
    time of inserting millions of them."""
    import inspect

    from taskqueue.queueablefns import FunctionTask

    checked: set = set()
    for task in tasks:
        fn = task.func
        if fn not in checked:
            try:
                inspect.signature(fn).bind(*task.args, **task.keywords)
            except TypeError as exc:
                raise TypeError(f"{fn.__name__} got invalid arguments: {exc}") from None
            checked.add(fn)
        yield FunctionTask((fn.__module__, fn.__name__), list(task.args), dict(task.keywords), -1)


PARALLEL_INSERT_MIN = 20000  # below this, starting processes costs more than it saves
INSERT_BLOCK = 2000


def insert_tasks(queue_url: str, tasks: Iterable, total: int | None) -> int:
    """Stream tasks into the queue with a progress display; returns the count inserted.

    Large plans into a FileQueue are written by one process per core (file creation is the
    cost there); the generator is consumed block by block, so memory stays bounded."""
    tq = open_queue(queue_url, create=True)
    workers = os.cpu_count() or 1
    with Progress("Inserting", total) as prog:
        if fq_dir(tq) and workers > 1 and (total or 0) >= PARALLEL_INSERT_MIN:
            n = _insert_parallel(tq, as_function_tasks(tasks), workers, prog)
        else:
            n = tq.insert(track(as_function_tasks(tasks), prog), total=total)
    print(f"inserted {n} tasks into {tq.qualified_path}", file=sys.stderr)
    return n


def _insert_block(queue_url: str, payloads: list) -> int:
    from taskqueue.queueablefns import FunctionTask

    tq = open_queue(queue_url, create=True)
    return tq.insert([FunctionTask(*p) for p in payloads], skip_insert_counter=True)


def _insert_parallel(tq, tasks: Iterator, workers: int, prog: Progress) -> int:
    import itertools
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    inserted = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        pending = set()
        while True:
            block = [(t.key, t.args, t.kwargs, -1) for t in itertools.islice(tasks, INSERT_BLOCK)]
            if block:
                pending.add(pool.submit(_insert_block, tq.qualified_path, block))
            if pending and (not block or len(pending) >= 2 * workers):
                done, pending = wait(pending, return_when=FIRST_COMPLETED if block else "ALL_COMPLETED")
                for fut in done:
                    n = fut.result()
                    inserted += n
                    prog.update(n)
            if not block and not pending:
                break
    tq.add_insert_count(inserted)
    return inserted


def _call(task) -> None:
    from igneous_like.retries import run_task

    run_task(task)


def run_local(tasks: Iterable, total: int | None, parallel: int) -> None:
    """Run tasks in this process (or a pool of `parallel` processes) with progress.

    Every task is attempted; failures are listed at the end and raise UserError."""
    failures: list[str] = []
    with Progress("Executing", total) as prog:
        if parallel <= 1:
            from igneous_like.retries import run_task

            for task in tasks:
                try:
                    run_task(task)
                except Exception as exc:  # a task failed: keep going, report at the end
                    failures.append(_describe(task, exc))
                prog.update()
        else:
            failures = _run_pool(tasks, parallel, prog)
    if failures:
        for line in failures[:10]:
            print(f"task failed: {line}", file=sys.stderr)
        raise UserError(f"{len(failures)} task(s) failed; first: {failures[0]}")


def _run_pool(tasks: Iterable, parallel: int, prog: Progress) -> list[str]:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    failures: list[str] = []
    window = parallel * 4
    with ProcessPoolExecutor(max_workers=parallel, mp_context=mp.get_context("spawn")) as pool:
        pending: dict = {}
        iterator = iter(tasks)
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < window:
                try:
                    task = next(iterator)
                except StopIteration:
                    exhausted = True
                    break
                pending[pool.submit(_call, task)] = task
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                task = pending.pop(fut)
                exc = fut.exception()
                if exc is not None:
                    failures.append(_describe(task, exc))
                prog.update()
    return failures


def _describe(task, exc: BaseException) -> str:
    name = getattr(getattr(task, "func", None), "__name__", "task")
    return f"{name}: {type(exc).__name__}: {exc}".splitlines()[0]


# ---------------------------------------------------------------- executing


@dataclass
class WorkerOptions:
    queue_url: str
    lease_sec: int = 600
    exit_on_empty: bool = False
    min_sec: float = -1
    num_tasks: int = -1
    quiet: bool = False
    max_attempts: int = 0  # 0: failing tasks stay in the queue forever
    poll_sec: float = 1.0
    failures: str | None = None  # where failure records go (default: beside a FileQueue)


@dataclass
class WorkerResult:
    executed: int = 0
    failed: int = 0
    given_up: int = 0
    errors: list[str] = field(default_factory=list)


class Periodic:
    """Calls tick() every `interval` seconds on a daemon thread while its with-block runs."""

    def __init__(self, interval: float):
        self.interval = interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self.done.wait(self.interval):
            self.tick()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


class LeaseKeeper(Periodic):
    """Renews a task's lease at half its length while the task runs."""

    def __init__(self, tq, task, lease_sec: int):
        super().__init__(lease_sec / 2)
        self.tq, self.task, self.lease_sec = tq, task, lease_sec

    def tick(self) -> None:
        try:
            self.tq.renew(self.task, self.lease_sec)
        except Exception as exc:  # the task may already be gone; keep working
            print(f"WARNING lease renewal failed for {self.task.id}: {exc}", file=sys.stderr)


def load_task(task) -> Callable[[], Any]:
    """Import the module that registers a task's function, then bind its arguments."""
    module = task.key[0]
    if not module.startswith(TASK_MODULE_PREFIX):
        raise UserError(f"task function {module}.{task.key[1]} is not an igneous-like task")
    importlib.import_module(module)
    return task.tofunc()


RUNNING_WAIT_MIN = 0.05  # seconds: first wait for another worker's running task


def worker_loop(opts: WorkerOptions, stop: threading.Event | None = None) -> WorkerResult:
    """Lease, run, delete until a stop condition; a failing task is recorded and left leased."""
    from taskqueue import QueueEmptyError

    from igneous_like.retries import run_task

    stop = stop or threading.Event()
    tq = open_queue(opts.queue_url, create=False)
    records = failures_url(tq, opts.failures)
    result = WorkerResult()
    started = time.monotonic()
    log = (lambda *a: None) if opts.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))

    def time_is_up() -> bool:
        return opts.min_sec >= 0 and time.monotonic() - started >= opts.min_sec

    # SQS long-polls: an empty answer after a few seconds is what "empty" means there (its
    # counts are approximate); a FileQueue answers at once.
    wait_sec = 0 if fq_dir(tq) else (5 if opts.exit_on_empty else 20)
    # while other workers finish a phase's last tasks, look again soon (a short task ends in a
    # fraction of a second), backing off to once a second for long ones
    running_wait = RUNNING_WAIT_MIN

    while not stop.is_set():
        if 0 <= opts.num_tasks <= result.executed + result.failed:
            break
        try:
            task = tq.lease(seconds=int(opts.lease_sec), wait_sec=wait_sec)
        except QueueEmptyError:
            task = None
        unreadable = report_unreadable(tq, records)
        for u in unreadable:
            if u.moved_to:
                result.failed += 1
                result.errors.append(f"unreadable task file {u.path}: {u.error}")
        if task is None:
            if unreadable:  # the lease met only unreadable files: others may still wait
                continue
            if opts.exit_on_empty and others_running(tq, records):
                stop.wait(min(opts.poll_sec, running_wait))  # their tasks may queue the next phase
                running_wait = min(running_wait * 2, 1.0)
                continue
            if opts.exit_on_empty or time_is_up():
                break
            stop.wait(opts.poll_sec)
            continue
        running_wait = RUNNING_WAIT_MIN
        t0 = time.monotonic()
        log(f"INFO start {task.key[1]} {task.id}")
        try:
            fn = load_task(task)
            with LeaseKeeper(tq, task, int(opts.lease_sec)):
                run_task(fn)  # transient storage errors are retried here, not charged to the queue
        except Exception as exc:
            result.failed += 1
            attempts = record_failure(tq, task, exc, records)
            line = f"{task.key[1]} {task.id}: {type(exc).__name__}: {exc}".splitlines()[0]
            result.errors.append(line)
            print(f"ERROR task failed (attempt {attempts}): {line}\n{traceback.format_exc()}", file=sys.stderr)
            if opts.max_attempts and records and attempts >= opts.max_attempts:
                give_up(tq, task, records)  # the record keeps it for `queue retry-failed`
                tq.delete(task)
                result.given_up += 1
        else:
            tq.delete(task, tally=True)
            clear_failure(tq, task, records)
            result.executed += 1
            log(f"INFO {task.key[1]} {task.id} done in {time.monotonic() - t0:.2f}s")
        if opts.min_sec == 0 or time_is_up():
            break
    return result


def others_running(tq, records: str | None) -> bool:
    """Whether a FileQueue task is leased and running somewhere: its lease is still open and it
    has no failure record (a failed task stays leased until its lease runs out, then is retried).

    A phased job's last task queues the next phase (ccl auto, import pyramids, annotations), so a
    worker told to exit when the queue is empty waits for running tasks instead of leaving the
    next phase to one worker. A worker that dies leaves a lease that runs out: then its task is
    leasable again and is picked up. SQS has no such listing: there workers exit as before."""
    base = fq_dir(tq)
    if base is None:
        return False
    now = time.time()
    failed = None
    try:
        names = os.listdir(os.path.join(base, "queue"))
    except FileNotFoundError:
        return False
    for name in names:
        stamp, sep, rest = name.partition("--")
        if not sep or not stamp.isdigit() or int(stamp) <= now:
            continue
        if failed is None:
            failed = {n[: -len(".json")] for n in _local_names(records)}
        if os.path.splitext(rest)[0] not in failed:
            return True
    return False


def _local_names(url: str | None) -> list[str]:
    """File names in a file:// failure-record directory (others cannot be listed cheaply)."""
    if not url or not url.startswith("file://"):
        return []
    try:
        return [n for n in os.listdir(url[len("file://"):]) if n.endswith(".json")]
    except FileNotFoundError:
        return []


def _child(opts: WorkerOptions, index: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        result = worker_loop(opts, stop)
    except UserError as exc:
        print(f"worker {index}: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(EXIT_TASKS_FAILED if result.failed else 0)


class ExecuteMonitor(Periodic):
    """Shows queue progress while workers run: a bar on a TTY, a line every 30 s in logs.

    Reads only cheap counters (FileQueue: the insertions file and the size of the completions
    tally), never a directory scan, so it costs nothing on a queue of millions of tasks."""

    def __init__(self, queue_url: str, interval: float = 1.0):
        super().__init__(interval)
        self.tq = open_queue(queue_url, create=False)
        self.fq = fq_dir(self.tq) is not None
        self.start_completed = self.tq.completed if self.fq else 0
        total = (self.tq.inserted - self.start_completed) if self.fq else None
        self.progress = Progress("Executing", max(total, 0) if total is not None else None)

    def tick(self) -> None:
        try:
            done = self.tq.completed - self.start_completed if self.fq else 0
        except Exception:  # counters can be mid-rewrite; the next tick will do
            return
        if done > self.progress.count:
            self.progress.update(done - self.progress.count)

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self.tick()  # the last count, after the workers are done
        self.progress.close()


def execute(opts: WorkerOptions, parallel: int) -> int:
    """Run `parallel` workers against the queue; returns the exit code (non-zero on failures)."""
    open_queue(opts.queue_url, create=False)  # fail fast on a bad URL, before forking
    if parallel <= 1:
        with ExecuteMonitor(opts.queue_url):
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            result = worker_loop(opts, stop)
            return _summarize([result.failed], [0])
    procs = _start_workers(opts, parallel)  # before the monitor's thread: a fork copies no thread
    with ExecuteMonitor(opts.queue_url):
        return _join_workers(procs)


def _start_workers(opts: WorkerOptions, parallel: int) -> list:
    """Worker processes forked from this one where the platform can: they start with the
    libraries already imported (spawned ones import them again, ~0.5 s CPU each)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    sys.stdout.flush()
    sys.stderr.flush()
    procs = [ctx.Process(target=_child, args=(opts, i), daemon=False) for i in range(parallel)]
    for p in procs:
        p.start()

    def forward(signum, _frame):
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    return procs


def _join_workers(procs: list) -> int:
    for p in procs:
        p.join()
    codes = [p.exitcode for p in procs]
    for i, code in enumerate(codes):
        if code == EXIT_TASKS_FAILED:
            print(f"worker {i}: some tasks failed (see errors above)", file=sys.stderr)
        elif code:
            print(f"worker {i}: exited with code {code}", file=sys.stderr)
    return _summarize([], codes)


def _summarize(failed_counts: list[int], codes: list[int | None]) -> int:
    if any(failed_counts) or any(c == EXIT_TASKS_FAILED for c in codes):
        return EXIT_TASKS_FAILED
    return 1 if any(codes) else 0


# ---------------------------------------------------------------- status


def status(queue_url: str, failures: str | None = None) -> dict[str, Any]:
    tq = open_queue(queue_url, create=False)
    url = failures_url(tq, failures)
    failures = list_failures(url) if url else None
    return {
        "queue": tq.qualified_path,
        "inserted": tq.inserted,
        "enqueued": tq.enqueued,
        "leased": tq.leased,
        "completed": tq.completed,
        "failed": len(failures) if failures is not None else None,
    }


def wait_until_empty(queue_url: str, interval: float, quiet_for: float) -> None:
    """Return once the queue has stayed empty for `quiet_for` seconds."""
    tq = open_queue(queue_url, create=False)
    empty_since = None
    while True:
        if tq.is_empty():
            empty_since = empty_since or time.monotonic()
            if time.monotonic() - empty_since >= quiet_for:
                return
        else:
            empty_since = None
        time.sleep(interval)


def iter_failed_tasks(url: str | None) -> Iterator[tuple[dict, Any]]:
    """Tasks that gave up after --max-attempts, as (record, task) to put back in a queue."""
    from functools import partial

    from taskqueue.queueablefns import REGISTRY

    for rec in list_failures(url):
        if not rec.get("gave_up") or not rec.get("task"):
            continue  # still in its queue (it will be retried anyway), or an unreadable file
        module, name = rec["task"]["fn"]
        importlib.import_module(module)
        yield rec, partial(REGISTRY[(module, name)], *rec["task"]["args"], **rec["task"]["kwargs"])
