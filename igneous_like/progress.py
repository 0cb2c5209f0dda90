"""Progress: a bar on a terminal, an occasional plain line in logs."""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


class Progress:
    """Counts work done; draws tqdm on a TTY, else prints a line every `every` seconds."""

    def __init__(self, desc: str, total: int | None, every: float = 30.0, quiet: bool = False):
        self.desc, self.total, self.every, self.quiet = desc, total, every, quiet
        self.count = 0
        self.start = self.last = time.monotonic()
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="task", dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if not self.quiet and now - self.last >= self.every:
            self.last = now
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        rate = self.count / elapsed
        # slow tasks (a forge's take a minute) would read "0.0/s": give those per minute
        shown = f"{rate:.1f}/s" if rate >= 0.1 or self.count == 0 else f"{rate * 60:.1f}/min"
        return f"{self.desc}: {self.count}{of} tasks in {elapsed:.1f}s ({shown})"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], progress: Progress) -> Iterator[T]:
    for item in items:
        yield item
        progress.update()
