"""A read-only HTTP server for local layers, as Neuroglancer needs them: CORS on every answer,
HTTP Range (shards and multi-resolution meshes are read by byte range), and files that
cloud-files stored compressed (`NAME.gz`, `.br`, `.zstd`) served under their bare NAME,
decompressed, since HTTP clients ask for the name without the suffix."""
from __future__ import annotations

import errno
import mimetypes
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

from igneous_like.errors import UserError

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, X-Requested-With, Content-Type",
    "Access-Control-Expose-Headers": "Content-Range, Content-Length, Accept-Ranges, Content-Encoding",
}
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
PORT_TRIES = 100


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, stop) of a single `bytes=a-b` / `bytes=a-` / `bytes=-n` range; None for the whole
    file. Raises ValueError for a range that cannot be satisfied (HTTP 416)."""
    if not header:
        return None
    m = RANGE.match(header.strip())
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None  # multi-range or malformed: RFC 9110 lets a server answer with the whole file
    first, last = m.group(1), m.group(2)
    if first == "":
        start, stop = max(size - int(last), 0), size
    else:
        start = int(first)
        stop = min(int(last) + 1, size) if last else size
    if start >= size or start >= stop:
        raise ValueError(f"range {header!r} outside {size} bytes")
    return start, stop


class Blob:
    """Bytes to answer with: a local file read by offset, or content already in memory."""

    def __init__(self, size: int, reader: Callable[[int, int], bytes]):
        self.size, self.read = size, reader

    @classmethod
    def of_file(cls, path: Path) -> "Blob":
        def read(start: int, stop: int) -> bytes:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read(stop - start)

        return cls(path.stat().st_size, read)

    @classmethod
    def of_bytes(cls, data: bytes) -> "Blob":
        return cls(len(data), lambda start, stop: data[start:stop])


class LayerFiles:
    """Files of the mounted layers, by URL path `/MOUNT/relative/path`: local directories, or
    (view --indirect) storage URLs read with cloud-files and this process's credentials."""

    def __init__(self, mounts: dict[str, Path | str]):
        self.mounts = {name: root if isinstance(root, str) else Path(root).resolve() for name, root in mounts.items()}

    def resolve(self, url_path: str) -> tuple[Path | str, str] | None:
        """(layer root, relative path) for a URL path, or None outside every mount."""
        parts = unquote(urlsplit(url_path).path).lstrip("/").split("/", 1)
        root = self.mounts.get(parts[0])
        rel = parts[1] if len(parts) > 1 else ""
        if root is None or any(p in ("..", "") for p in rel.split("/")):
            return None
        return root, rel

    def open(self, url_path: str, ranged: bool) -> Blob | None:
        """The file as named; else its compressed copy (NAME.gz ...) decompressed; else None."""
        found = self.resolve(url_path)
        if found is None:
            return None
        root, rel = found
        from cloudfiles import CloudFiles

        if isinstance(root, str):
            return remote_blob(CloudFiles(root), rel, ranged)
        path = root / rel
        if path.is_file():
            return Blob.of_file(path)
        if path.is_dir():
            return None
        data = CloudFiles(root.as_uri()).get(rel)  # finds NAME.gz/.br/.zstd and decompresses
        return None if data is None else Blob.of_bytes(data)


def remote_blob(cf, rel: str, ranged: bool) -> Blob | None:
    """An object of a storage URL: whole (decompressed by cloud-files), or for a range request
    read by ranges (shards and multires mesh files are stored uncompressed)."""
    if not ranged:
        data = cf.get(rel)
        return None if data is None else Blob.of_bytes(data)
    size = cf.size(rel)
    if size is None:
        return None
    return Blob(size, lambda start, stop: cf.get({"path": rel, "start": start, "end": stop}))


class Handler(BaseHTTPRequestHandler):
    """GET/HEAD/OPTIONS with CORS and Range over a LayerFiles."""

    files: LayerFiles  # set on the subclass made per server
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # a viewer makes thousands of requests; keep the terminal for the URL

    def do_OPTIONS(self):
        self.send_response(204)
        self._cors()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _cors(self) -> None:
        for key, value in CORS_HEADERS.items():
            self.send_header(key, value)

    def _serve(self, body: bool) -> None:
        header = self.headers.get("Range")
        try:
            blob = self.files.open(self.path, ranged=bool(header))
        except Exception:  # unreadable file or object: an HTTP error, not a server traceback
            return self._status(500)
        if blob is None:
            return self._status(404)
        try:
            span = parse_range(header, blob.size)
        except ValueError:
            self.send_response(416)
            self._cors()
            self.send_header("Content-Range", f"bytes */{blob.size}")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        start, stop = span or (0, blob.size)
        try:
            data = blob.read(start, stop) if body else b""
        except Exception:
            return self._status(500)
        self.send_response(206 if span else 200)
        self._cors()
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", mimetypes.guess_type(self.path)[0] or "application/octet-stream")
        self.send_header("Content-Length", str(stop - start))
        if span:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{blob.size}")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _status(self, code: int) -> None:
        self.send_response(code)
        self._cors()
        self.send_header("Content-Length", "0")
        self.end_headers()


def bind_free_port(host: str, port: int, tries: int = PORT_TRIES) -> tuple[socket.socket, int]:
    """A socket bound to `port`, or to the next free one after it (up to `tries` ports)."""
    for candidate in range(port, min(port + tries, 65536)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT after a Ctrl-C is no conflict
        try:
            sock.bind((host, candidate))
            return sock, candidate
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise UserError(f"cannot listen on {host}:{candidate}: {exc.strerror}") from None
    raise UserError(f"no free port on {host} from {port} to {port + tries - 1}")


def serve_layers(mounts: dict[str, Path | str], sock: socket.socket) -> ThreadingHTTPServer:
    """Serve `mounts` in a daemon thread on a socket from bind_free_port(); stop it with
    shutdown() + server_close(), which frees the port."""
    handler = type("LayerHandler", (Handler,), {"files": LayerFiles(mounts)})
    server = ThreadingHTTPServer(sock.getsockname(), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.server_address = sock.getsockname()
    server.daemon_threads = True
    server.server_activate()
    threading.Thread(target=server.serve_forever, name="layer-server", daemon=True).start()
    return server
