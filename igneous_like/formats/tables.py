"""Reading tables (CSV, Parquet) by row range, through pyarrow: one file, or a directory of
part files read as one table (names starting with `_` or `.` skipped, as pyarrow does).

Columns are read with the types the caller asks for, so a value that does not parse is an
error naming its column, never a silently inferred string.

A file is read in pieces, and a task reads only its part of a file through ranged reads
(formats/byte_access.py), on object storage as on local disk:
- CSV: pieces are line-aligned byte ranges (pyarrow's CSV reader already assumes no newline
  inside a quoted value); a part [lo, hi) in bytes is parsed with the header's column names.
- Parquet: pieces are row groups; a part [lo, hi) in rows reads the row groups it overlaps.
- gzip CSV cannot be entered midway: pieces are record batches, a part [lo, hi) in rows is
  streamed (decompressed) from the start of the file.
`pieces` is the planner's one pass (it checks every row and learns each piece's rows);
`read_part` is a map task's read."""
from __future__ import annotations

import os
from typing import Iterator

from igneous_like.errors import UserError

FORMATS = ("csv", "parquet")
BLOCK_BYTES = 1 << 22  # CSV parse block: memory of a streaming read
PIECE_BYTES = (1 << 14, 1 << 23)  # a CSV piece: about 1/256 of its file, within these bounds
READ_BLOCK = 1 << 12  # cache block: small reads (a header line, a Parquet footer) are rounded to it
READ_PART = 1 << 23  # one ranged read: adjacent missing blocks, or a piece of a large read (S3 advice: 8-16 MB)


def table_files(url: str, fmt: str = "auto") -> list[tuple[str, str]]:
    """(file url, format) of a table: the file itself or the part files of a directory."""
    from cloudfiles import CloudFiles

    from igneous_like.urls import normalize_url

    url = normalize_url(url)
    parent, _, name = url.rstrip("/").rpartition("/")
    from igneous_like.layers import local_path

    local = local_path(url)
    try:
        if (os.path.isfile(local) if local is not None else CloudFiles(parent).exists(name)):
            return [(url, _format_of(url, fmt))]
        names = sorted(n for n in CloudFiles(url).list(flat=True)
                       if not n.rsplit("/", 1)[-1].startswith(("_", ".")) and _format_of(n, fmt, strict=False))
    except FileNotFoundError:
        names = []
    except Exception as exc:  # unreachable bucket, bad credentials
        raise UserError(f"cannot read table {url}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if not names:
        raise UserError(f"no table at {url}: neither a file nor a directory of .csv/.parquet part files")
    return [(f"{url.rstrip('/')}/{n}", _format_of(n, fmt)) for n in names]


def _format_of(path: str, fmt: str, strict: bool = True) -> str | None:
    if fmt in FORMATS:
        return fmt
    for ext, kind in ((".csv", "csv"), (".csv.gz", "csv"), (".tsv", "csv"), (".parquet", "parquet"), (".pq", "parquet")):
        if path.endswith(ext):
            return kind
    if strict:
        raise UserError(f"cannot tell the format of {path}: name it .csv or .parquet, or pass --format")
    return None


def schema(url: str, fmt: str) -> dict:
    """Column name -> pyarrow type of one file (CSV: as inferred from its first block)."""
    import pyarrow.parquet as pq

    if fmt == "parquet":
        arrow = _guard(url, lambda: pq.ParquetFile(_open(url)).schema_arrow)
    else:
        import pyarrow.csv as pcsv

        arrow = _guard(url, lambda: pcsv.open_csv(_open(url), read_options=pcsv.ReadOptions(block_size=1 << 16)).schema)
    return {f.name: f.type for f in arrow}


def by_rows(url: str, fmt: str) -> bool:
    """Whether a file's pieces and parts are row ranges (Parquet, gzip CSV), which can be cut
    anywhere, rather than byte ranges (CSV)."""
    return fmt == "parquet" or url.endswith(".gz")


def pieces(url: str, fmt: str, types: dict, piece_bytes: int | None = None) -> Iterator[tuple[int, int, list]]:
    """The whole file as (lo, hi, typed RecordBatches) pieces, in order: [lo, hi) in rows
    when `by_rows`, else in bytes (line-aligned, about `piece_bytes` long)."""
    if fmt == "parquet":
        pf = _parquet(url)
        lo = 0
        for group in range(pf.num_row_groups):
            n = pf.metadata.row_group(group).num_rows
            got = _guard(url, lambda: list(pf.iter_batches(batch_size=65536, row_groups=[group], columns=list(types))))
            yield lo, lo + n, [_typed(b, types, url) for b in got]
            lo += n
        return
    if url.endswith(".gz"):
        lo = 0
        for batch in batches(url, fmt, types):
            yield lo, lo + batch.num_rows, [batch]
            lo += batch.num_rows
        return
    with _source(url) as src:
        size = src.size
        step = piece_bytes or min(max(size // 256, PIECE_BYTES[0]), PIECE_BYTES[1])
        names, lo = _csv_header(src)
        while lo < size:
            hi = _line_start(src, min(lo + step, size))
            yield lo, hi, list(_csv_part(src, names, types, lo, hi))
            lo = hi


def read_part(url: str, fmt: str, types: dict, lo: int, hi: int) -> Iterator:
    """A map task's typed RecordBatches of part [lo, hi) of a file (rows when `by_rows`, else
    line-aligned bytes), fetching only what that part needs (gzip CSV: its prefix)."""
    if fmt == "parquet":
        pf = _parquet(url)
        starts = [0]
        for group in range(pf.num_row_groups):
            starts.append(starts[-1] + pf.metadata.row_group(group).num_rows)
        groups = [g for g in range(pf.num_row_groups) if starts[g] < hi and starts[g + 1] > lo]
        if not groups:
            return
        got = _guard(url, lambda: pf.iter_batches(batch_size=65536, row_groups=groups, columns=list(types)))
        yield from _sliced(got, types, url, lo - starts[groups[0]], hi - starts[groups[0]])
        return
    if url.endswith(".gz"):
        yield from batches(url, fmt, types, lo, hi)
        return
    with _source(url) as src:
        names, _ = _csv_header(src)
        yield from _csv_part(src, names, types, lo, hi)


def batches(url: str, fmt: str, types: dict, start: int = 0, stop: int | None = None) -> Iterator:
    """pyarrow RecordBatches of rows [start, stop) with only the columns of `types`
    (column -> pyarrow type), cast to those types, streamed from the start of the file."""
    yield from _sliced(_raw_batches(url, fmt, types), types, url, start, stop)


def _sliced(raw, types: dict, url: str, start: int, stop: int | None) -> Iterator:
    offset = 0
    for batch in raw:
        n = batch.num_rows
        if stop is not None and offset >= stop:
            return
        lo, hi = max(start - offset, 0), n if stop is None else min(stop - offset, n)
        if hi > lo:
            yield _typed(batch.slice(lo, hi - lo), types, url)
        offset += n


def _typed(batch, types: dict, url: str):
    import pyarrow as pa

    return pa.RecordBatch.from_arrays([_cast(batch.column(c), t, c, url) for c, t in types.items()], names=list(types))


def _source(url: str):
    """The file as a seekable file of ranged reads; `window` gives a part of it as a file."""
    from igneous_like.formats.byte_access import RangedFile

    return _guard(url, lambda: RangedFile(url, block=READ_BLOCK, part=READ_PART))


def _parquet(url: str):
    import pyarrow.parquet as pq

    return _guard(url, lambda: pq.ParquetFile(_source(url)))


def _csv_header(src) -> tuple[list[str], int]:
    """The column names of a CSV file and the byte offset of its first data line."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    end = _line_start(src, 1) if src.size else 0
    src.seek(0)
    line = src.read(end)
    if not line.strip():
        raise UserError(f"cannot read {src.url}: no header line")
    names = _guard(src.url, lambda: pcsv.read_csv(pa.BufferReader(line)).column_names)
    return names, end


def _line_start(f, at: int) -> int:
    """The first offset >= `at` where a line starts (the file's size if none does)."""
    if at >= f.size:
        return f.size
    f.seek(at - 1)
    pos, step = at - 1, 1 << 12  # lines are short: small reads first, growing
    while True:
        block = f.read(step)
        if not block:
            return f.size
        i = block.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos, step = pos + len(block), min(2 * step, 1 << 20)


def _csv_part(src, names: list[str], types: dict, lo: int, hi: int) -> Iterator:
    """Typed batches of the line-aligned bytes [lo, hi) of a CSV file (no header among them)."""
    import pyarrow.csv as pcsv

    missing = [c for c in types if c not in names]
    if missing:
        raise UserError(f"{src.url} has no column {missing[0]!r} (columns: {', '.join(names)})")
    options = pcsv.ReadOptions(column_names=names, block_size=BLOCK_BYTES)
    for batch in _csv_batches(src.url, lambda: src.window(lo, hi), options, types):
        yield _typed(batch, types, src.url)


def _csv_batches(url: str, opener, options, types: dict) -> Iterator:
    """Batches of `types`' columns read as strings (the later cast names the column and value
    that do not parse), with Arrow's parse errors as one-line errors naming the file."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    convert = pcsv.ConvertOptions(include_columns=list(types), column_types={c: pa.string() for c in types},
                                  strings_can_be_null=True)
    reader = _guard(url, lambda: pcsv.open_csv(opener(), read_options=options, convert_options=convert))
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise UserError(f"cannot parse {url}: {exc}".splitlines()[0]) from None
        yield batch


def count_rows(url: str, fmt: str, column: str) -> int:
    """Rows of one file (Parquet: from its footer; CSV: one streaming pass over `column`)."""
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        return _guard(url, lambda: pq.ParquetFile(_open(url)).metadata.num_rows)
    return sum(b.num_rows for b in _raw_batches(url, fmt, {column: pa.string()}))


def _raw_batches(url: str, fmt: str, types: dict) -> Iterator:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pf = _guard(url, lambda: pq.ParquetFile(_open(url)))
        yield from _guard(url, lambda: list(pf.iter_batches(batch_size=65536, columns=list(types))))
        return
    import pyarrow.csv as pcsv

    yield from _csv_batches(url, lambda: _open(url), pcsv.ReadOptions(block_size=BLOCK_BYTES), types)


def _cast(column, to, name: str, url: str):
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.type == to:
        return column
    if pa.types.is_string(column.type) and not pa.types.is_string(to):
        column = pc.utf8_trim_whitespace(column)
    try:
        return pc.cast(column, to, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        if pa.types.is_string(column.type) and pa.types.is_floating(to):  # true/false columns
            try:
                return pc.cast(pc.cast(column, pa.bool_()), to)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        raise UserError(f"column {name!r} of {url} is not {to}: {exc}".splitlines()[0]) from None


def _open(url: str):
    """A file as a stream of ranged reads (gzip: decompressed as it streams)."""
    import pyarrow as pa

    f = _source(url)
    return pa.CompressedInputStream(f, "gzip") if url.endswith(".gz") else f


def _guard(url: str, fn):
    import pyarrow as pa

    try:
        return fn()
    except FileNotFoundError:
        raise UserError(f"no table file at {url}") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"cannot read {url}: {exc}".splitlines()[0]) from None
