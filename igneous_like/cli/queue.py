"""`execute` and `queue` commands: run workers, inspect and manage queues."""
from __future__ import annotations

import os
import sys
import time

import click

from igneous_like.validate import NONNEG_FLOAT, NONNEG_INT, POSITIVE_FLOAT, POSITIVE_INT, RUN_SECONDS, TASK_COUNT


@click.command()
@click.argument("queue")
@click.option("-p", "--parallel", type=NONNEG_INT, default=None, help="Worker processes (default: the root -p).")
@click.option("--lease-sec", type=POSITIVE_INT, default=lambda: int(os.environ.get("LEASE_SECONDS", 600)),
              show_default="600, or env LEASE_SECONDS", help="Seconds a task is leased for (renewed while it runs).")
@click.option("-x", "--exit-on-empty", is_flag=True, help="Exit when no task can be leased.")
@click.option("--min-sec", type=RUN_SECONDS, default=-1, show_default=True,
              help="Run at least this long, then stop after the current task. 0: one task. -1: forever.")
@click.option("-n", "--num-tasks", type=TASK_COUNT, default=-1, show_default=True, help="Stop after this many tasks (-1: no limit).")
@click.option("--max-attempts", type=NONNEG_INT, default=3, show_default=True,
              help="After this many failures a task leaves the queue for the failure record (0: never).")
@click.option("--failures", default=None,
              help="Storage URL for failure records (default: beside a FileQueue; env IGNEOUS_LIKE_FAILURES).")
@click.option("-q", "--quiet", is_flag=True, help="Do not log each finished task.")
@click.pass_context
def execute(ctx, queue, parallel, lease_sec, exit_on_empty, min_sec, num_tasks, max_attempts, failures, quiet):
    """Lease and run tasks from QUEUE until it is empty (-x) or forever.

    A failing task is logged with its traceback and stays in the queue for another try; the
    exit code is non-zero if any task failed.

    \b
    Example:
      igneous-like execute fq://./my-queue -p 4 -x
    """
    from igneous_like import queues
    from igneous_like.cli.options import resolve_parallel

    opts = queues.WorkerOptions(
        queue_url=queues.normalize_queue_url(queue), lease_sec=lease_sec, exit_on_empty=exit_on_empty,
        min_sec=min_sec, num_tasks=num_tasks, quiet=quiet, max_attempts=max_attempts, failures=failures,
    )
    code = queues.execute(opts, resolve_parallel(ctx, parallel))
    sys.exit(code)


@click.group()
def queue() -> None:
    """Inspect and manage task queues."""


@queue.command()
@click.argument("queue")
@click.option("--eta", type=NONNEG_FLOAT, default=0, show_default=True, help="Watch this many seconds to estimate rate and ETA.")
@click.option("--failures", default=None, help="Failure records URL (default: beside a FileQueue).")
def status(queue, eta, failures):
    """Counts of a queue: inserted, enqueued, leased, completed, failed.

    \b
    Example:
      igneous-like queue status fq://./my-queue --eta 10
    """
    from igneous_like import queues

    before = queues.status(queue, failures)
    if eta > 0:
        time.sleep(eta)
    st = queues.status(queue, failures)
    sqs = st["queue"].startswith("sqs://")

    def count(value) -> str:
        return "n/a (SQS keeps no such count)" if sqs and value != value else str(value)  # nan on SQS

    click.echo(f"queue      {st['queue']}")
    click.echo(f"inserted   {count(st['inserted'])}")
    approx = " approximately (SQS counts are eventually consistent)" if sqs else ""
    click.echo(f"enqueued   {st['enqueued']} (leased {st['leased']}){approx}")
    click.echo(f"completed  {count(st['completed'])}")
    click.echo(f"failed     {st['failed'] if st['failed'] is not None else 'n/a (give --failures URL)'}")
    if eta > 0 and sqs:
        moved = before["enqueued"] - st["enqueued"]
        click.echo(f"rate       ~{moved / eta:.2f} tasks/s from the change in enqueued (approximate)")
    elif eta > 0:
        rate = (st["completed"] - before["completed"]) / eta
        left = st["enqueued"]
        when = f"{left / rate:.0f}s" if rate > 0 else "unknown (no progress seen)"
        click.echo(f"rate       {rate:.2f} tasks/s, ETA {when}")


@queue.command("failures")
@click.argument("queue")
@click.option("--failures", default=None, help="Failure records URL (default: beside a FileQueue).")
def list_failed(queue, failures):
    """List failed tasks with their last error.

    \b
    Example:
      igneous-like queue failures fq://./my-queue
    """
    from igneous_like import queues

    tq = queues.open_queue(queue, create=False)
    recs = queues.list_failures(queues.failures_url(tq, failures))
    for rec in recs:
        state = "gave up" if rec.get("gave_up") else "queued"
        what = rec["task"]["fn"][1] if rec.get("task") else rec.get("file")  # an unreadable task file
        click.echo(f"{rec['id']}  attempts={rec['attempts']} ({state})  {what}  {rec['error']}")
    click.echo(f"{len(recs)} failed task(s)")


@queue.command("retry-failed")
@click.argument("queue")
@click.option("--failures", default=None, help="Failure records URL (default: beside a FileQueue).")
def retry_failed(queue, failures):
    """Put tasks that gave up (after --max-attempts) back into the queue.

    \b
    Example:
      igneous-like queue retry-failed sqs://my-queue --failures s3://bucket/failures
    """
    from cloudfiles import CloudFiles

    from igneous_like import queues

    tq = queues.open_queue(queue, create=False)
    url = queues.failures_url(tq, failures)
    n = 0
    for rec, task in queues.iter_failed_tasks(url):
        tq.insert([task])
        CloudFiles(url).delete(f"{rec['id']}.json")
        n += 1
    click.echo(f"re-queued {n} failed task(s)")


@queue.command()
@click.argument("queue")
def release(queue):
    """Release every lease so all tasks can be taken at once.

    \b
    Example:
      igneous-like queue release fq://./my-queue
    """
    from igneous_like import queues

    queues.open_queue(queue, create=False).release_all()
    click.echo("released all leases")


@queue.command()
@click.argument("queue")
def purge(queue):
    """Delete every task and zero the counters.

    \b
    Example:
      igneous-like queue purge fq://./my-queue
    """
    import shutil

    from igneous_like import queues

    tq = queues.open_queue(queue, create=False)
    tq.purge()
    if queues.fq_dir(tq):
        shutil.rmtree(os.path.join(queues.fq_dir(tq), "failures"), ignore_errors=True)
    click.echo("purged")


@queue.command()
@click.argument("queue")
@click.option("--interval", type=POSITIVE_FLOAT, default=2.0, show_default=True, help="Seconds between checks.")
@click.option("--quiet-for", type=NONNEG_FLOAT, default=0.0, show_default=True, help="Seconds the queue must stay empty.")
def wait(queue, interval, quiet_for):
    """Block until the queue is empty, without executing anything.

    \b
    Example:
      igneous-like queue wait fq://./my-queue --quiet-for 60
    """
    from igneous_like import queues

    queues.wait_until_empty(queue, interval, quiet_for)
    click.echo("queue is empty")


def _move_options(fn):
    return click.option("--lease-sec", type=int, default=600, show_default=True,
                        help="Seconds each batch stays leased in SRC while it is copied.")(fn)


@queue.command("cp")
@click.argument("src")
@click.argument("dest")
@_move_options
def copy(src, dest, lease_sec):
    """Copy every task of SRC into DEST (FileQueue or SQS, either way); SRC keeps its tasks.
    An SQS SRC is read by leasing each message until all are copied, then released: do not run
    workers on it meanwhile.

    \b
    Example:
      igneous-like queue cp fq://./my-queue sqs://my-queue
    """
    from igneous_like.queue_moves import copy_tasks

    result = copy_tasks(src, dest, lease_sec)
    click.echo(f"copied {result.tasks} task(s)")


@queue.command("mv")
@click.argument("src")
@click.argument("dest")
@_move_options
def move(src, dest, lease_sec):
    """Move every available task from SRC to DEST. Each batch is in DEST before it leaves SRC:
    an interrupted move leaves some tasks in both queues, never one in neither.

    \b
    Example:
      igneous-like queue mv sqs://my-queue fq://./local-queue
    """
    from igneous_like.queue_moves import move_tasks

    result = move_tasks(src, dest, lease_sec)
    click.echo(f"moved {result.tasks} task(s)")
    if result.left_leased:
        click.echo(f"{result.left_leased} task(s) leased by workers stay in SRC: run again once their leases end",
                   err=True)


@queue.command()
@click.argument("queue")
def rezero(queue):
    """Zero the inserted and completed counters of a FileQueue (SQS keeps none).

    \b
    Example:
      igneous-like queue rezero fq://./my-queue
    """
    from igneous_like.queue_moves import rezero as zero

    click.echo("counters zeroed" if zero(queue) else "SQS keeps no counters: nothing to zero")
