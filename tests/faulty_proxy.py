"""A small fault-injecting HTTP proxy for tests: it forwards to an S3 server (moto) and fails the
first `failures` attempts at each (method, object) pair, so every request must be retried to
succeed. The faults take turns: an HTTP 503, a 429-style SlowDown throttle, a connection reset.
Which object gets which kind can vary with the order of concurrent requests; how many faults each
object gets does not."""
from __future__ import annotations

import http.client
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

KINDS = ("503", "throttle", "reset")


class FaultyProxy:
    def __init__(self, upstream: str, failures: int = 1, only: tuple[str, ...] = ("GET", "PUT", "HEAD")):
        self.upstream = urlsplit(upstream)
        self.failures = failures
        self.only = only
        self.seen: Counter = Counter()
        self.injected: Counter = Counter()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultyProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fault_for(self, method: str, path: str) -> str | None:
        """The fault to inject for this request, if any (counted per method and object)."""
        if method not in self.only:
            return None
        key = (method, path.split("?")[0])
        with self.lock:
            self.seen[key] += 1
            if self.seen[key] > self.failures:
                return None
            # kinds in turn over all injected faults: with 3 or more, every kind is exercised
            # whatever objects the task happens to request
            kind = KINDS[sum(self.injected.values()) % len(KINDS)]
            self.injected[kind] += 1
            return kind

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy.fault_for(self.command, self.path)
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                    self.close_connection = True
                    return
                if fault:
                    code, err = (503, "ServiceUnavailable") if fault == "503" else (503, "SlowDown")
                    payload = f"<Error><Code>{err}</Code><Message>injected</Message></Error>".encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                if self.command == "HEAD":
                    self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        return Handler
