"""Copying and moving tasks between queues (FileQueue and SQS, either way round).

A move never loses a task: each batch is leased from SRC, inserted into DEST, and only then
deleted from SRC. Cut off in between, the batch's leases expire and the tasks are in both
queues (run twice, the same bytes), never in neither. A FileQueue DEST gets each task file
whole or not at all (fq_atomic), so no worker leases a half-written one. A copy of a
FileQueue reads the task files without leasing; SQS can only be read by leasing, so a copy
leases every message, inserts the copies, and then hands the leases back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from igneous_like import queues
from igneous_like.errors import UserError
from igneous_like.progress import Progress

SQS_BATCH = 10  # the most SQS hands out per receive
FQ_BATCH = 100


@dataclass
class MoveResult:
    tasks: int
    left_leased: int  # tasks SRC had leased to workers: not moved


def open_pair(src: str, dest: str):
    src_url, dest_url = queues.normalize_queue_url(src), queues.normalize_queue_url(dest)
    if src_url == dest_url:
        raise UserError(f"SRC and DEST are the same queue: {src_url}")
    src_q = queues.open_queue(src_url, create=False)  # first: a missing SRC creates no DEST
    dest_q = queues.open_queue(dest_url, create=True)  # a FileQueue's inserts are atomic (fq_atomic)
    return src_q, dest_q


def leased_batches(tq, lease_sec: int) -> Iterator[list]:
    """Lease SRC's available tasks batch by batch until none is left."""
    from taskqueue import QueueEmptyError

    sqs = tq.path.protocol == "sqs"
    batch = SQS_BATCH if sqs else FQ_BATCH
    records = queues.failures_url(tq)
    while True:
        try:  # SQS: a short long-poll, since a zero-wait receive may miss messages that exist
            got = tq.lease(seconds=lease_sec, num_tasks=batch, wait_sec=2 if sqs else 0)
        except QueueEmptyError:
            got = []
        met = queues.report_unreadable(tq, records)  # set aside in SRC, as a worker would
        if got:
            yield got if isinstance(got, list) else [got]
        elif not met:  # empty, and not because every file leased was unreadable
            return


def move_tasks(src: str, dest: str, lease_sec: int = 600) -> MoveResult:
    """Move every available task from SRC to DEST: insert, then delete from SRC."""
    src_q, dest_q = open_pair(src, dest)
    moved = 0
    with Progress("queue mv", _enqueued(src_q)) as progress:
        for batch in leased_batches(src_q, lease_sec):
            dest_q.insert(batch)
            for task in batch:
                src_q.delete(task)
            moved += len(batch)
            progress.update(len(batch))
    return MoveResult(moved, _leased(src_q))


def copy_tasks(src: str, dest: str, lease_sec: int = 600) -> MoveResult:
    """Copy every task of SRC into DEST; SRC keeps them all."""
    src_q, dest_q = open_pair(src, dest)
    copied = 0
    with Progress("queue cp", _enqueued(src_q)) as progress:
        if src_q.path.protocol != "sqs":
            for batch in _chunks(src_q.tasks(), FQ_BATCH):
                dest_q.insert(batch)
                copied += len(batch)
                progress.update(len(batch))
            queues.report_unreadable(src_q, None)  # skipped; SRC's workers will set them aside
            return MoveResult(copied, 0)
        held = []
        try:  # every message stays leased until all are copied, so none is read twice
            for batch in leased_batches(src_q, lease_sec):
                held.extend(batch)
                dest_q.insert(batch)
                copied += len(batch)
                progress.update(len(batch))
        finally:
            for task in held:
                src_q.cancel(task)
    return MoveResult(copied, 0)


def rezero(queue: str) -> bool:
    """Zero a FileQueue's inserted and completed counters; False for SQS (it keeps none)."""
    tq = queues.open_queue(queue, create=False)
    if tq.path.protocol == "sqs":
        return False
    tq.rezero()
    return True


def _chunks(items, n: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _enqueued(tq) -> int | None:
    try:
        return int(tq.enqueued)
    except (TypeError, ValueError):
        return None


def _leased(tq) -> int:
    try:
        return int(tq.leased)
    except (TypeError, ValueError):
        return 0
