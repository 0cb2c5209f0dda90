"""FileQueue leases that never trip over a task file they cannot read.

fq_atomic keeps our own inserts from leaving a partial task file, but a queue can still hold
one: written by an older run, by python-task-queue itself, or by another tool killed mid-write.
python-task-queue's lease renames such a file to a leased name, fails to parse it, and then
answers "queue empty" (after a few seconds of retries): `execute -x` stops with other tasks still
waiting, exits 0, and the file comes back after every lease, forever. Here a leased file is
parsed and checked first; one that is not a task is moved whole into `unreadable/` beside
`queue/` (nothing in python-task-queue looks there) and remembered, so that the caller can
report it by name and keep a failure record of it. A file younger than FRESH_SEC may still be
being written by a writer that creates before it writes: it is only left leased, and is tried
again when the lease runs out.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass

from taskqueue.file_queue_api import FileQueueAPI, idfn, nowfn, set_timestamp, write_lock_file

from igneous_like.fq_atomic import AtomicFileQueueAPI

UNREADABLE = "unreadable"
FRESH_SEC = 60  # a partial file this young may still be being written


@dataclass(frozen=True)
class Unreadable:
    """A task file a lease could not read."""

    ident: str  # the task id its name carries
    path: str  # where it was found in queue/
    error: str  # why it is not a task, one line
    moved_to: str | None  # where it is now; None: left leased (it may still be being written)


class CheckedFileQueueAPI(AtomicFileQueueAPI):
    """Atomic inserts, and leases that set aside task files that are not tasks."""

    def __init__(self, path: str):
        super().__init__(path)
        self.unreadable_path = os.path.join(self.path, UNREADABLE)
        self.found: list[Unreadable] = []

    def _lease_filename(self, filename: str, seconds: int):
        """python-task-queue's lease of one file (rename to the leased name under the movement
        log's lock, then log it), with the body checked before it is handed out."""
        leased = set_timestamp(filename, nowfn() + int(seconds))
        leased_path = os.path.join(self.queue_path, leased)
        with open(os.path.join(self.movement_path, idfn(leased)), "at") as log:
            write_lock_file(log)
            try:
                os.rename(os.path.join(self.queue_path, filename), leased_path)
            except FileNotFoundError:  # another worker took it first
                return None
            log.write(leased + "\n")
        try:
            with open(leased_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:  # deleted meanwhile
            return None
        try:
            return check_task(raw)
        except ValueError as exc:
            self._set_aside(filename, leased_path, one_line(exc))
            return None

    def _set_aside(self, filename: str, leased_path: str, error: str) -> None:
        ident = idfn(filename)
        found_at = os.path.join(self.queue_path, filename)
        try:
            age = time.time() - os.stat(leased_path).st_mtime
        except FileNotFoundError:
            return
        if age < FRESH_SEC:
            note = f" (written {age:.0f}s ago, maybe still being written: left leased for another try)"
            self.found.append(Unreadable(ident, found_at, error + note, None))
            return
        os.makedirs(self.unreadable_path, exist_ok=True)
        dest = os.path.join(self.unreadable_path, filename)
        os.rename(leased_path, dest)
        try:  # it is no longer in the queue: nothing for a delete by id to find
            os.remove(os.path.join(self.movement_path, ident))
        except FileNotFoundError:
            pass
        self.found.append(Unreadable(ident, found_at, error, dest))

    def __iter__(self):
        """Every task body in queue/ (as `queue cp` reads them), skipping and remembering the
        files that are not tasks; nothing is moved."""
        for entry in os.scandir(self.queue_path):
            try:
                with open(entry.path, "rb") as f:
                    raw = f.read()
            except FileNotFoundError:  # deleted between scan and read
                continue
            try:
                check_task(raw)
            except ValueError as exc:
                self.found.append(Unreadable(idfn(entry.name), entry.path, one_line(exc) + " (skipped)", None))
                continue
            yield raw

    def take_found(self) -> list[Unreadable]:
        """The unreadable files met since the last call."""
        found, self.found = self.found, []
        return found

    def purge(self, native: bool = False) -> None:
        super().purge(native)
        shutil.rmtree(self.unreadable_path, ignore_errors=True)


def check_task(raw: bytes) -> dict:
    """A task file's body as python-task-queue hands it out; ValueError if it is not a task."""
    body = json.loads(raw)  # also ValueError (UnicodeDecodeError) on bytes that are not UTF-8
    payload = body.get("payload") if isinstance(body, dict) else None
    if isinstance(payload, dict):  # a RegisteredTask: its class reads the rest
        return body
    if not (isinstance(payload, list) and len(payload) == 4 and isinstance(payload[0], list)
            and len(payload[0]) == 2 and isinstance(payload[1], list) and isinstance(payload[2], dict)):
        raise ValueError("not a task: no payload [[module, function], args, kwargs, id]")
    return body


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def make_checked(tq) -> None:
    """Give an open FileQueue TaskQueue atomic inserts and checked leases, and remove incoming
    files killed writers left (SQS queues are left as they are: a message is sent whole or not
    at all)."""
    if isinstance(tq.api, FileQueueAPI) and not isinstance(tq.api, CheckedFileQueueAPI):
        tq.api = CheckedFileQueueAPI(tq.api.path)
        tq.api.remove_stale()


def take_found(tq) -> list[Unreadable]:
    """The unreadable task files the queue's leases met since the last call ([] for SQS)."""
    return tq.api.take_found() if isinstance(tq.api, CheckedFileQueueAPI) else []
