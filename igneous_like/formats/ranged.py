"""A byte window of a local or object-storage file as a seekable, read-only Python file.

Readers that need part of a large object (pyarrow's Parquet reader: a footer and some column
chunks; a CSV reader given a line-aligned byte range) read through it, and each read is one
ranged request (cloud-files on gs://, s3://, https://; pread on file://), so a task fetches
its part of the object, never the whole of it.

    src = Source("s3://bucket/tables/syn.csv")
    with RangeFile(src, 1_000_000, 2_000_000) as f:   # bytes [1e6, 2e6) as a file
        pyarrow.csv.open_csv(f, ...)
    src.fetched                                        # bytes requested so far
"""
from __future__ import annotations

import io
import os

MIN_FETCH = 1 << 13  # small reads (a Parquet footer's length, a header line) share one request


class Source:
    """One file, local or remote: its size and ranged reads, with a count of bytes fetched."""

    def __init__(self, url: str):
        from igneous_like.layers import local_path

        self.url = url
        self.fetched = 0
        self._fd: int | None = None
        path = local_path(url)
        if path is not None:
            self._fd = os.open(path, os.O_RDONLY)  # FileNotFoundError: the caller names the table
            self.size = os.fstat(self._fd).st_size
            return
        from cloudfiles import CloudFiles

        parent, _, self._name = url.rpartition("/")
        self._cf = CloudFiles(parent)
        size = self._cf.size(self._name)
        if size is None:
            raise FileNotFoundError(url)
        self.size = int(size)

    def fetch(self, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of the file (fewer at its end)."""
        stop = min(stop, self.size)
        if stop <= start:
            return b""
        if self._fd is not None:
            data = os.pread(self._fd, stop - start, start)
        else:
            data = self._cf.get({"path": self._name, "start": start, "end": stop}) or b""
        self.fetched += len(data)
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RangeFile(io.RawIOBase):
    """Bytes [start, stop) of a Source as a file positioned at 0. Reads are fetched on demand,
    at least MIN_FETCH bytes at a time (one block is kept), never beyond `stop`."""

    def __init__(self, source: Source, start: int = 0, stop: int | None = None):
        super().__init__()
        self.source = source
        self.start = start
        self.stop = source.size if stop is None else min(stop, source.size)
        self.pos = 0
        self._block = (0, b"")  # (window offset, bytes)

    @property
    def size(self) -> int:
        return self.stop - self.start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(base + offset, 0)
        return self.pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.size - self.pos)
        if want <= 0:
            return 0
        at, block = self._block
        if not (at <= self.pos and self.pos + want <= at + len(block)):
            length = min(max(want, MIN_FETCH), self.size - self.pos)
            block = self.source.fetch(self.start + self.pos, self.start + self.pos + length)
            at = self.pos
            self._block = (at, block) if len(block) <= 4 * MIN_FETCH else (0, b"")  # keep small blocks only
        chunk = block[self.pos - at:self.pos - at + want]
        view[:len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)
