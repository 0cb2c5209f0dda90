"""Diagnostic tasks for checking a worker fleet: they touch no dataset."""
from __future__ import annotations

import os
import time

from taskqueue import queueable


@queueable
def sleep_task(seconds: float, log_path: str | None = None, tag: str = "") -> None:
    """Sleep, and append one line per run to log_path (to count how often a task ran)."""
    if log_path:
        with open(log_path, "a") as f:
            f.write(f"{tag} {os.getpid()} {time.time():.3f}\n")
    time.sleep(seconds)


@queueable
def fail_task(message: str = "diagnostic failure") -> None:
    """Always raise: for checking failure records and retry budgets."""
    raise RuntimeError(message)
