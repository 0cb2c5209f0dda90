"""Bytes of source files wherever cloud-files reaches them, read only where a task needs them:
the one place for ranged reads (image import's formats, annotation import's tables).

- `byte_source`: a file's size and ranged reads (ranged GETs on object storage, pread on
  local disk), counting the bytes fetched.
- `RangedFile`: a seekable binary file over a window [start, stop) of such a file (default: all
  of it) with a small block cache, so libraries that take Python file objects (h5py, tifffile,
  pyarrow's CSV and Parquet readers) and header parsers read object storage directly and a task
  fetches only its part of a file.
- `Decompressed`: a forward-only gzip/zlib or bz2 stream over any binary file; seeking ahead
  decodes and drops, so a task keeps only what it asked for.
- `FileArray`: an N-d array stored contiguously (C or Fortran order) at an offset in such a file,
  sliced box by box with reads in increasing offset order (a forward-only stream serves it) and
  at most `max_read` bytes buffered besides the result.

    with RangedFile("s3://bucket/tables/syn.csv", block=8192) as f:
        part = f.window(1_000_000, 2_000_000)   # bytes [1e6, 2e6) as a file positioned at 0
        pyarrow.csv.open_csv(part, ...)
        f.fetched                               # bytes fetched so far, windows included
"""
from __future__ import annotations

import bz2
import io
import math
import os
import zlib
from collections import OrderedDict
from typing import BinaryIO, Callable

import numpy as np

from igneous_like.errors import UserError

MiB = 1 << 20
HEADER_BLOCK = 64 * 1024  # range size for reads of a remote file's header only


def is_remote(path: str) -> bool:
    """A URL cloud-files reads (s3://, gs://, https://, aliases), not a local path or file://."""
    return "://" in path and not path.startswith("file://")


def split_url(url: str) -> tuple[str, str]:
    """('s3://b/dir', 'name') of 's3://b/dir/name'."""
    head, _, name = url.rstrip("/").rpartition("/")
    return head, name


def cloudfiles(url: str):
    from cloudfiles import CloudFiles

    from igneous_like.storage import configure_environment

    configure_environment()
    try:
        return CloudFiles(url)
    except Exception as exc:
        raise UserError(f"cannot open {url}: {type(exc).__name__}: {exc}".splitlines()[0]) from None


def get_bytes(url: str) -> bytes:
    """A whole (small) file, e.g. one PNG slice."""
    head, name = split_url(url)
    data = cloudfiles(head).get(name)
    if data is None:
        raise UserError(f"{url} does not exist")
    return data


class ObjectBytes:
    """One object on storage that cloud-files reaches: its size and ranged GETs (in parallel
    on object stores), with `fetched`, the bytes fetched so far (tests read it)."""

    def __init__(self, url: str):
        self.url, self.fetched = url, 0
        head, self.key = split_url(url)
        self.cf = cloudfiles(head)
        try:
            size = self.cf.size(self.key)
        except Exception as exc:
            raise UserError(f"cannot read {url}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
        if size is None:
            raise UserError(f"{url} does not exist")
        self.size = int(size)

    def fetch(self, parts: list[tuple[int, int]]) -> list[bytes]:
        """Bytes [start, stop) of each part (inside the object), in order."""
        from igneous_like.storage import get_many

        try:
            got = get_many(self.cf, [{"path": self.key, "start": s, "end": e} for s, e in parts])
        except Exception as exc:
            raise UserError(f"cannot read {self.url}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
        pieces = [g["content"] or b"" for g in got]
        self.fetched += sum(len(p) for p in pieces)
        return pieces

    def close(self) -> None:
        pass


class LocalBytes:
    """A local file (a path or file:// URL) with the same interface: size, ranged reads by
    pread (no shared position, so windows of one file do not disturb each other), `fetched`."""

    def __init__(self, url: str):
        self.url, self.fetched = url, 0
        path = url[len("file://"):] if url.startswith("file://") else url
        try:
            self.fd: int | None = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise UserError(f"cannot read {url}: {exc.strerror or exc}") from None
        self.size = os.fstat(self.fd).st_size

    def fetch(self, parts: list[tuple[int, int]]) -> list[bytes]:
        if self.fd is None:
            raise ValueError(f"{self.url} is closed")
        pieces = [os.pread(self.fd, e - s, s) for s, e in parts]
        self.fetched += sum(len(p) for p in pieces)
        return pieces

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        self.close()


ByteSource = ObjectBytes | LocalBytes


def byte_source(url: str) -> ByteSource:
    """The bytes of a file, local or on storage, read by ranges."""
    return ObjectBytes(url) if is_remote(url) else LocalBytes(url)


class RangedFile(io.RawIOBase):
    """Read-only, seekable file of bytes [start, stop) of a file (default: all of it), read by
    ranges: an object on storage by ranged GETs, a local file by pread. Positions count from
    `start`. Reads up to half the cache go through an LRU cache of `block`-sized blocks aligned
    to `start` (small header and index reads repeat a lot; adjacent missing blocks come in one
    request of at most `part` bytes, default `block`); larger reads go straight into the
    caller's buffer, fetched in parallel batches of `part`-sized pieces. No read reaches
    outside the window. `fetched` counts the bytes fetched from the file."""

    CACHE = 32 * MiB  # at most this much cached, whatever the block size
    MIN_BATCH = 4  # a large read keeps at least this many pieces in flight (small caches, big parts)

    def __init__(self, url: str | ByteSource, block: int = MiB, cache_blocks: int = 32, start: int = 0,
                 stop: int | None = None, part: int | None = None):
        super().__init__()
        self.owner, self.cache = False, OrderedDict[int, bytes]()  # what close() needs, should opening fail
        self.source = byte_source(url) if isinstance(url, str) else url
        self.owner = isinstance(url, str)  # closing this file closes the source it opened
        self.url = self.source.url
        self.block, self.cache_blocks, self.part = block, cache_blocks, part or block
        self.start = min(max(0, start), self.source.size)
        self.stop = self.source.size if stop is None else max(self.start, min(stop, self.source.size))
        self.size, self.pos = self.stop - self.start, 0
        self.name = self.url  # tifffile and h5py show it in messages

    def window(self, start: int, stop: int | None = None, **options) -> "RangedFile":
        """Bytes [start, stop) of this file (positions of this file) as a file of their own, over
        the same source (closed with this file, not with the window)."""
        settings = {"block": self.block, "cache_blocks": self.cache_blocks, "part": self.part, **options}
        end = self.size if stop is None else min(stop, self.size)
        return RangedFile(self.source, start=self.start + start, stop=self.start + end, **settings)

    @property
    def fetched(self) -> int:
        """Bytes fetched from the underlying file so far, through this file or its windows."""
        return self.source.fetched

    def close(self) -> None:
        if not self.closed and self.owner:
            self.source.close()
        self.cache.clear()
        super().close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + int(offset))
        return self.pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self.size - self.pos))
        if n > self.block * self.cache_blocks // 2:
            self.fetch_into(view[:n], self.pos)
        elif n:
            view[:n] = self.range(self.pos, self.pos + n)
        self.pos += n
        return n

    def range(self, start: int, stop: int) -> bytes:
        """Bytes start:stop (inside the window) through the block cache."""
        first, last = start // self.block, (stop - 1) // self.block
        runs = self.missing_runs(first, last)
        if runs:
            parts = [(a * self.block, min(b * self.block, self.size)) for a, b in runs]
            for (a, b), piece in zip(runs, self.fetch(parts, joined=False)):
                for i in range(a, b):
                    self.cache[i] = piece[(i - a) * self.block: (i - a + 1) * self.block]
        for b in range(first, last + 1):
            self.cache.move_to_end(b)
        joined = b"".join(self.cache[b] for b in range(first, last + 1))
        while len(self.cache) > self.cache_blocks:
            self.cache.popitem(last=False)
        return joined[start - first * self.block: stop - first * self.block]

    def missing_runs(self, first: int, last: int) -> list[tuple[int, int]]:
        """Blocks [a, b) of first..last not in the cache, as runs of adjacent blocks fetched in
        one request each, at most `part` bytes long (with part == block: one request a block)."""
        most = max(1, self.part // self.block)
        runs: list[tuple[int, int]] = []
        for b in range(first, last + 1):
            if b in self.cache:
                continue
            if runs and runs[-1][1] == b and b - runs[-1][0] < most:
                runs[-1] = (runs[-1][0], b + 1)
            else:
                runs.append((b, b + 1))
        return runs

    def fetch_into(self, view: memoryview, start: int) -> None:
        """A large read straight into `view`, bypassing the cache: pieces of `part` bytes
        fetched in parallel batches, so at most a batch is held besides the result."""
        step = self.part
        parts = [(s, min(s + step, start + len(view))) for s in range(start, start + len(view), step)]
        batch = max(self.MIN_BATCH, self.cache_blocks * self.block // (2 * step))
        for i in range(0, len(parts), batch):
            for (s, e), piece in zip(parts[i:i + batch], self.fetch(parts[i:i + batch], joined=False)):
                view[s - start: e - start] = piece

    def fetch(self, parts: list[tuple[int, int]], joined: bool = True):
        """Bytes of parts (positions in the window), in order."""
        pieces = self.source.fetch([(self.start + s, self.start + e) for s, e in parts])
        for (s, e), piece in zip(parts, pieces):
            if len(piece) != e - s:
                raise UserError(f"{self.url}: short read at bytes {self.start + s}-{self.start + e} "
                                "(file changed or truncated?)")
        return b"".join(pieces) if joined else pieces


class Decompressed(io.RawIOBase):
    """Forward-only decoded view of a gzip/zlib ('gzip') or bzip2 ('bz2') stream that starts at
    `raw`'s current position. Seeking ahead decodes and drops; seeking back starts over."""

    OUT = 4 * MiB  # decoded bytes per step: bounds memory whatever the compression ratio
    IN = 256 * 1024  # compressed bytes per step (remote fetches come in the file's own blocks)

    def __init__(self, raw: BinaryIO, kind: str, name: str = ""):
        super().__init__()
        if kind not in ("gzip", "bz2"):
            raise ValueError(kind)
        self.raw, self.kind, self.name = raw, kind, name
        self.start = raw.tell()
        self.restart()

    def restart(self) -> None:
        self.raw.seek(self.start)
        self.decoder = self.new_decoder()
        self.feed, self.pending, self.pos, self.done = b"", b"", 0, False

    def close(self) -> None:
        if not self.closed:
            self.raw.close()
        super().close()

    def new_decoder(self):
        return zlib.decompressobj(zlib.MAX_WBITS | 32) if self.kind == "gzip" else bz2.BZ2Decompressor()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self.pos + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR):
            raise io.UnsupportedOperation("a compressed stream cannot seek from its end")
        if target < self.pos:
            self.restart()
        while self.pos < target:
            if not self.pending and not self.step():
                break
            drop = min(len(self.pending), target - self.pos)
            self.pending, self.pos = self.pending[drop:], self.pos + drop
        return self.pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = 0
        while n < len(view):
            if not self.pending and not self.step():
                break
            take = min(len(self.pending), len(view) - n)
            view[n:n + take] = self.pending[:take]
            self.pending, n = self.pending[take:], n + take
        self.pos += n
        return n

    def step(self) -> bool:
        """Decode the next piece into `pending`; False at the end of the stream."""
        while not self.done:
            try:
                out = self.decode()
            except (zlib.error, OSError, EOFError) as exc:
                raise UserError(f"{self.name}: corrupt {self.kind} data: {exc}".splitlines()[0]) from None
            if out is None:
                self.done = True
            elif out:
                self.pending = out
                return True
        return False

    def decode(self) -> bytes | None:
        """The next decoded bytes (maybe empty), None at the end. Concatenated members are read
        through, as gzip and bzip2 tools do."""
        d = self.decoder
        if d.eof:
            rest = d.unused_data or self.raw.read(self.IN)
            if not rest.strip(b"\0"):
                return None  # end, or zero padding after the last member
            self.decoder = d = self.new_decoder()
            return d.decompress(rest, self.OUT)
        if self.kind == "gzip":
            data = d.unconsumed_tail or self.raw.read(self.IN)
        else:
            data = self.raw.read(self.IN) if d.needs_input else b""
        if not data and (self.kind == "gzip" or d.needs_input):
            raise EOFError("stream ends before its end marker (truncated file?)")
        return d.decompress(data, self.OUT)


class FileArray:
    """An array of `shape` and `dtype` stored contiguously from byte `offset` of the file that
    `opener()` returns, in C or Fortran order. Slicing (slices per axis) opens the file and
    reads spans covering the box, at most `max_read` bytes at a time, in increasing offset order;
    contiguous runs of at least `min_run` bytes go straight into the result."""

    MAX_READ = 16 * MiB

    def __init__(self, opener: Callable[[], BinaryIO], offset: int, shape: tuple, dtype, order: str = "C",
                 max_read: int = MAX_READ, name: str = "", min_run: int = 256 * 1024):
        self.opener, self.offset, self.order = opener, int(offset), order
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self.max_read, self.name, self.min_run = max_read, name, min_run

    def __getitem__(self, index: tuple) -> np.ndarray:
        index = tuple(index) + (slice(None),) * (len(self.shape) - len(index))
        ranges = [s.indices(n)[:2] if isinstance(s, slice) else (int(s), int(s) + 1)
                  for s, n in zip(index, self.shape)]
        drop = tuple(0 if not isinstance(s, slice) else slice(None) for s in index)
        if self.order == "F":  # a Fortran array is the C array of the reversed axes
            out = self.read_c(tuple(reversed(self.shape)), list(reversed(ranges))).transpose()
        else:
            out = self.read_c(self.shape, ranges)
        return out[drop]

    def read_c(self, shape: tuple, ranges: list[tuple[int, int]]) -> np.ndarray:
        out = np.empty([max(0, b - a) for a, b in ranges], self.dtype)
        if out.size:
            with self.opener() as f:
                self.fill(f, shape, ranges, 0, 0, out)
        return out

    def fill(self, f: BinaryIO, shape: tuple, ranges: list, axis: int, base: int, out: np.ndarray) -> None:
        """Fill `out` (the box's part below index prefix `base`, an element offset) from axis on."""
        item = self.dtype.itemsize
        plane = math.prod(shape[axis + 1:])  # elements per index along this axis
        lo, hi = ranges[axis]
        if plane * item > self.max_read and axis < len(shape) - 1:
            for i in range(lo, hi):
                self.fill(f, shape, ranges, axis + 1, base + i * plane, out[i - lo])
            return
        strides = [math.prod(shape[k + 1:]) for k in range(axis + 1, len(shape))]
        inner_first = sum(a * s for (a, _), s in zip(ranges[axis + 1:], strides))
        if self.read_runs(f, shape, ranges, axis, base, inner_first, out):
            return
        inner_last = sum((b - 1) * s for (_, b), s in zip(ranges[axis + 1:], strides))
        inner = tuple(slice(a, b) for a, b in ranges[axis + 1:])
        step = max(1, self.max_read // max(1, plane * item))
        for a in range(lo, hi, step):
            b = min(hi, a + step)
            start = base + a * plane  # element offset of index a's first element
            first, last = inner_first, (b - 1 - a) * plane + inner_last + 1  # relative to start
            buf = np.empty((b - a) * plane, self.dtype)
            f.seek(self.offset + (start + first) * item)
            read_exactly(f, memoryview(buf[first:last]).cast("B"), self.name)
            out[a - lo: b - lo] = buf.reshape((b - a, *shape[axis + 1:]))[(slice(None), *inner)]

    def read_runs(self, f: BinaryIO, shape: tuple, ranges: list, axis: int, base: int, inner_first: int,
                  out: np.ndarray) -> bool:
        """Where the box is one contiguous run per index of `axis` (every axis after the next
        is whole: a full-width band of NIfTI or NRRD) and runs are long, read each run straight
        into `out`: no staging buffer, no copy, no gap bytes. False where that does not apply."""
        if axis + 1 >= len(shape) or any(ranges[k] != (0, shape[k]) for k in range(axis + 2, len(shape))):
            return False
        lo, hi = ranges[axis]
        plane = math.prod(shape[axis + 1:])
        run = out[0].size if len(out) else 0
        if run * self.dtype.itemsize < self.min_run:
            return False
        if run == plane:  # whole planes: the box is one run
            f.seek(self.offset + (base + lo * plane) * self.dtype.itemsize)
            read_exactly(f, memoryview(out).cast("B"), self.name)
            return True
        for i in range(lo, hi):
            f.seek(self.offset + (base + i * plane + inner_first) * self.dtype.itemsize)
            read_exactly(f, memoryview(out[i - lo]).cast("B"), self.name)
        return True


def read_exactly(f: BinaryIO, view: memoryview, name: str) -> None:
    n = 0
    while n < len(view):
        got = f.readinto(view[n:])
        if not got:
            raise UserError(f"{name}: file ends before its data does (truncated?)")
        n += got


def read_buffer(path: str, compression: str | None = None, staging: int = 0) -> int:
    """Bytes a read of `path` may hold besides its result: a staging span, a stream's buffers
    (compressed input, decoded output, what is pending) and a remote file's block cache."""
    return staging + (3 * Decompressed.OUT if compression else 0) + (RangedFile.CACHE if is_remote(path) else 0)


def open_file(path: str, block: int = MiB) -> BinaryIO:
    """A local path or a storage URL as a readable, seekable binary file (remote reads come in
    `block`-sized ranges: small for header-only reads)."""
    if not is_remote(path):
        try:
            return open(path[len("file://"):] if path.startswith("file://") else path, "rb")
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    return io.BufferedReader(RangedFile(path, block=block), buffer_size=min(block, 64 * 1024))


def open_data(path: str, stream_start: int = 0, compression: str | None = None, block: int = MiB) -> BinaryIO:
    """The file at `path`; with `compression` ('gzip' or 'bz2'), the decoded stream that starts
    at byte `stream_start` (positions then count decoded bytes)."""
    f = open_file(path, block)
    if not compression:
        return f
    f.seek(stream_start)
    return Decompressed(f, compression, path)


def file_size(path: str) -> int:
    if not is_remote(path):
        return os.path.getsize(path)
    return ObjectBytes(path).size


def check_size(path: str, end: int) -> None:
    """An uncompressed file must hold the bytes its header promises: say so before planning."""
    size = file_size(path)
    if size < end:
        raise UserError(f"{path} is truncated: {size} bytes, its header describes data up to byte {end}")


def join(base: str, name: str) -> str:
    """`name` relative to the directory of the file `base` (a path or URL)."""
    if is_remote(base):
        return f"{split_url(base)[0]}/{name}"
    return os.path.join(os.path.dirname(base), name)
