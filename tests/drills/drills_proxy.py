"""A recording HTTP proxy between Ansible (or any AWS client) and the AWS emulator.

Point AWS_ENDPOINT_URL at `proxy.url` instead of the emulator: every request is forwarded
unchanged and recorded as an AWS operation name, so a test can prove that a run sent no
write request at all (`proxy.writes()`), or stop the endpoint in the middle of an apply
(`kill_after_writes`) while the emulator behind it keeps its state, and bring it back
(`start()`) on the same port.

An operation is a read when its name starts with Describe, List, Get, Head (query and JSON
protocols: the Action parameter or the X-Amz-Target header) or, for the REST protocols
(S3, CloudFront), when the method is GET or HEAD. Everything else is a write.
"""

from __future__ import annotations

import http.client
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

READ_PREFIXES = ("Describe", "List", "Get", "Head", "Lookup", "Search")


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    operation: str
    write: bool


def operation_of(method: str, path: str, headers, body: bytes) -> tuple[str, bool]:
    """The AWS operation name of one request, and whether it writes."""
    target = headers.get("X-Amz-Target")
    if target:
        operation = target.rsplit(".", 1)[-1]
        return operation, not operation.startswith(READ_PREFIXES)
    query = parse_qs(urlsplit(path).query)
    action = query.get("Action", [None])[0]
    content_type = headers.get("Content-Type", "")
    if action is None and body and "x-www-form-urlencoded" in content_type:
        action = parse_qs(body.decode("utf-8", "replace")).get("Action", [None])[0]
    if action:
        return action, not action.startswith(READ_PREFIXES)
    # REST protocols (S3, CloudFront, ...): the method says it.
    return f"{method} {urlsplit(path).path}", method not in ("GET", "HEAD")


class RecordingProxy:
    """Forwards HTTP to `upstream` (http://host:port) and records every call."""

    def __init__(self, upstream: str, port: int = 0):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port or 80)
        self.port = port
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._kill_after: int | None = None
        self.killed = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> "RecordingProxy":
        self.stop()  # (re)start: never two servers
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = self._read_chunked()
                if proxy.killed.is_set():
                    # The endpoint is "dead": drop the connection without an answer.
                    self.close_connection = True
                    return
                operation, write = operation_of(self.command, self.path, self.headers, body)
                if not self.path.startswith("/moto-api/"):
                    with proxy._lock:
                        proxy.calls.append(Call(self.command, self.path, operation, write))
                        writes = sum(call.write for call in proxy.calls)
                    if write and proxy._kill_after is not None and writes > proxy._kill_after:
                        # This write never reaches the emulator: the endpoint died first.
                        proxy._die()
                        self.close_connection = True
                        return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("transfer-encoding", "connection", "content-length")}
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=300)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                self.send_response_only(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _read_chunked(self) -> bytes:
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _forward

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self.killed.clear()
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def _die(self) -> None:
        """Stop listening (connections are refused from now on), from any thread."""
        if self.killed.is_set():
            return
        self.killed.set()
        threading.Thread(target=self.stop, daemon=True).start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def kill_after_writes(self, count: int | None) -> None:
        """Die on the write request after `count` writes (None: never)."""
        self._kill_after = count

    # -- what was seen --------------------------------------------------------------------
    def mark(self) -> int:
        with self._lock:
            return len(self.calls)

    def writes(self, since: int = 0) -> list[Call]:
        with self._lock:
            return [call for call in self.calls[since:] if call.write]

    def operations(self, since: int = 0) -> list[str]:
        with self._lock:
            return [call.operation for call in self.calls[since:]]


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
