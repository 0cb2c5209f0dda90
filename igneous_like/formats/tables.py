"""Reading tables (CSV, Parquet) by row range, through pyarrow: one file, or a directory of
part files read as one table (names starting with `_` or `.` skipped, as pyarrow does).

Columns are read with the types the caller asks for, so a value that does not parse is an
error naming its column, never a silently inferred string. Local files are streamed; files on
object storage are fetched whole with cloud-files (one file at a time)."""
from __future__ import annotations

import io
import os
from typing import Iterator

from igneous_like.errors import UserError

FORMATS = ("csv", "parquet")
BLOCK_BYTES = 1 << 22  # CSV parse block: memory of a streaming read


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


def batches(url: str, fmt: str, types: dict, start: int = 0, stop: int | None = None) -> Iterator:
    """pyarrow RecordBatches of rows [start, stop) with only the columns of `types`
    (column -> pyarrow type), cast to those types."""
    import pyarrow as pa

    offset = 0
    for batch in _raw_batches(url, fmt, types):
        n = batch.num_rows
        if stop is not None and offset >= stop:
            return
        lo, hi = max(start - offset, 0), n if stop is None else min(stop - offset, n)
        if hi > lo:
            part = batch.slice(lo, hi - lo)
            yield pa.RecordBatch.from_arrays([_cast(part.column(c), t, c, url) for c, t in types.items()],
                                             names=list(types))
        offset += n


def count_rows(url: str, fmt: str, column: str) -> int:
    """Rows of one file (Parquet: from its footer; CSV: one streaming pass over `column`)."""
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        return _guard(url, lambda: pq.ParquetFile(_open(url)).metadata.num_rows)
    return sum(b.num_rows for b in _raw_batches(url, fmt, {column: pa.string()}))


def _raw_batches(url: str, fmt: str, types: dict) -> Iterator:
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        pf = _guard(url, lambda: pq.ParquetFile(_open(url)))
        yield from _guard(url, lambda: list(pf.iter_batches(batch_size=65536, columns=list(types))))
        return
    import pyarrow.csv as pcsv

    # strings first: the cast below names the column and value that do not parse
    convert = pcsv.ConvertOptions(include_columns=list(types), column_types={c: pa.string() for c in types},
                                  strings_can_be_null=True)
    reader = _guard(url, lambda: pcsv.open_csv(_open(url), read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES),
                                               convert_options=convert))
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise UserError(f"cannot parse {url}: {exc}".splitlines()[0]) from None
        yield batch


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
    """A local file as a stream; a remote one fetched whole."""
    import pyarrow as pa

    from igneous_like.layers import local_path

    path = local_path(url)
    if path is not None:
        if url.endswith(".gz"):
            return pa.CompressedInputStream(pa.OSFile(path), "gzip")
        return pa.OSFile(path)
    from cloudfiles import CloudFiles

    parent, _, name = url.rpartition("/")
    data = CloudFiles(parent).get(name)
    if data is None:
        raise UserError(f"no table file at {url}")
    return pa.BufferReader(data) if not url.endswith(".gz") else pa.CompressedInputStream(io.BytesIO(data), "gzip")


def _guard(url: str, fn):
    import pyarrow as pa

    try:
        return fn()
    except FileNotFoundError:
        raise UserError(f"no table file at {url}") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"cannot read {url}: {exc}".splitlines()[0]) from None
