"""FileQueue inserts that never show a worker a half-written task file.

python-task-queue writes each task straight to its final name in `queue/`, so a writer killed
mid-write leaves an empty or truncated file there, and the next worker's lease of it fails on
bad JSON. Here each task is written whole under `incoming/` (beside `queue/`, so on the same
file system) and then renamed into `queue/`: a rename is atomic, and nothing in
python-task-queue looks into `incoming/`. Names, bodies and the movement log are the library's
own, so its workers, `lease`, `delete` and counters work on the result unchanged.

The insertion counter is python-task-queue's file too, but not its update: the library reads the
file unlocked and opens it for writing (which empties it) before it takes its lock, so when two
processes insert at once (workers whose tasks queue the next pass) one can read the file empty,
as 0, and the count loses the other's tasks (seen: 56 of 156). Here the read, the sum and the
write happen under one lock, and the new number replaces the old by rename, so a reader sees one
whole number or the other.
"""
from __future__ import annotations

import fcntl
import os
import time
import uuid

from taskqueue.file_queue_api import FileQueueAPI
from taskqueue.lib import jsonify, mkdir, toiter

INCOMING = "incoming"
STALE_SEC = 3600  # an incoming file this old was left by a killed writer (its task is still in SRC)


class AtomicFileQueueAPI(FileQueueAPI):
    """FileQueueAPI whose insert writes under a temporary name, then renames into `queue/`."""

    def __init__(self, path: str):
        super().__init__(path)
        self.incoming_path = mkdir(os.path.join(self.path, INCOMING))

    def insert(self, tasks, delay_seconds: int = 0) -> int:
        timestamp = int(time.time()) + delay_seconds if delay_seconds > 0 else 0  # 0: available now
        total = 0
        for task in toiter(tasks):
            ident = str(uuid.uuid4())
            name = f"{timestamp}--{ident}.json"
            task["id"] = ident
            staged = os.path.join(self.incoming_path, name)
            with open(staged, "w") as f:
                f.write(jsonify(task))
            # the movement log first: a task file without it could not be deleted by id
            with open(os.path.join(self.movement_path, ident), "w") as f:
                f.write(name + "\n")
            os.rename(staged, os.path.join(self.queue_path, name))
            total += 1
        return total

    def add_insert_count(self, ct: int) -> int:
        """Add ct to the insertion counter; returns the new count."""
        with open(self.insertions_path + ".lock", "a") as lock:
            fcntl.lockf(lock, fcntl.LOCK_EX)  # released when the file closes
            try:
                with open(self.insertions_path) as f:
                    text = f.read().strip()
            except FileNotFoundError:
                text = ""
            count = (int(text) if text else 0) + int(ct)
            staged = os.path.join(self.incoming_path, f"insertions-{uuid.uuid4()}")
            with open(staged, "w") as f:
                f.write(str(count))
                f.flush()
                os.fsync(f.fileno())
            os.replace(staged, self.insertions_path)
        return count

    def remove_stale(self, older_than: float = STALE_SEC) -> int:
        """Delete incoming files a killed writer left (older than `older_than` seconds)."""
        cutoff = time.time() - older_than
        removed = 0
        for entry in os.scandir(self.incoming_path):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.remove(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

