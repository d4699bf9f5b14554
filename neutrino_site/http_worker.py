"""The gunicorn worker of `neutrino serve --mode http`: gthread, except that no request thread ever waits on a client.

gunicorn's gthread worker hands a connection to a request thread as soon as its socket is readable; the
thread then reads the request with blocking calls and no deadline, so a client that sends half a header
(or half a body) and stops holds that thread until it goes away: 32 such sockets stop the process.

`FrontDoorWorker` reads each request in the worker's main loop instead (the selector gthread already runs,
non-blocking, a few microseconds per packet): the head, then a body of known length, each with a deadline
and a size cap. Only a complete request reaches a thread, with every byte of it already buffered, so the
thread never blocks on the socket. On the way it answers, from the main loop and without a thread:

- 413 to a body over the limit, before reading it; it then reads and discards what the client is still
  sending (up to `DRAIN_MAX_BYTES` or `DRAIN_TIMEOUT_S`) so that a plain client (urllib, requests) that
  writes its whole body before reading gets the 413 and not a broken pipe;
- 431 to a head over `HEAD_MAX_BYTES`; 408 to a head or body that does not arrive within its timeout;
- 411 to a body without Content-Length (chunked): nothing in Neutrino reads one (Django needs the length).

gunicorn's own limits still apply to what reaches the parser (request line, header count and size).
What it cannot do: a client that sends its request fast and reads its answer slowly holds a thread while
the answer is written (the kernel's send buffer absorbs small answers; large pages may block); and
`worker_connections` bounds the sockets a process holds, so enough attackers can still fill it: the head
timeout makes each socket cost them a fresh connection every few seconds.
"""

from __future__ import annotations

import errno
import json
import selectors
import time
from functools import partial
from typing import Any

from django.conf import settings
from gunicorn.workers.gthread import TConn, ThreadWorker

HEAD_MAX_BYTES = 64 * 1024
DRAIN_MAX_BYTES = 64 * 1024 * 1024
DRAIN_TIMEOUT_S = 10.0
RECV_BYTES = 256 * 1024


class FrontConn(TConn):
    """A connection the main loop reads for: `pending` holds the bytes of the request being read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending = bytearray()
        self.preread = b""
        self.deadline = 0.0
        self.body_end = -1  # the buffer length at which the request is complete, once the head is read
        self.drain_left = 0  # while draining after an early answer: bytes still to discard

    def init(self) -> None:
        super().init()
        if self.preread and self.parser is not None:
            self.parser.unreader.unread(self.preread)
            self.preread = b""


def _header_values(head: bytes, name: bytes) -> list[bytes]:
    values = []
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            values.append(value.strip())
    return values


def _answer(status: str, message: str) -> bytes:
    """A complete answer that closes the connection, its body in the API's error shape."""
    error = status.split(" ", 1)[1].lower().replace(" ", "_")
    body = json.dumps({"error": error, "message": message}).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


class FrontDoorWorker(ThreadWorker):
    """gthread with the request read in the main loop (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading: dict[FrontConn, None] = {}  # connections the main loop reads for, oldest first
        # Bodies over Django's own limit (just above the payload limit) are refused unread.
        self.max_body_bytes: int = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        self.head_timeout_s: float = settings.NEUTRINO_HTTP_HEADER_TIMEOUT_S
        self.body_timeout_s: float = settings.NEUTRINO_HTTP_BODY_TIMEOUT_S

    def accept(self, listener: Any) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = FrontConn(self.cfg, client_sock, client_addr, listener.getsockname())
        self._read_request(conn, b"")

    def on_client_socket_readable(self, conn: FrontConn, client: Any) -> None:
        # A kept-alive connection has a new request: read it here, not in a thread.
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_request(conn, b"")

    def _read_request(self, conn: FrontConn, buffered: bytes) -> None:
        conn.pending = bytearray(buffered)
        conn.body_end = -1
        conn.deadline = time.monotonic() + self.head_timeout_s
        conn.sock.setblocking(False)
        self.reading[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        if buffered:
            self._advance(conn)

    def _on_readable(self, conn: FrontConn, client: Any) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        if conn.drain_left:
            conn.drain_left = max(0, conn.drain_left - len(data))
            if not conn.drain_left:
                self._close(conn)
            return
        conn.pending += data
        self._advance(conn)

    def _advance(self, conn: FrontConn) -> None:
        if conn.body_end < 0:
            end = conn.pending.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.pending) > HEAD_MAX_BYTES:
                    self._refuse(conn, "431 Request Header Fields Too Large", "the request head is too large",
                                 DRAIN_MAX_BYTES)
                return
            self._read_head(conn, bytes(conn.pending[:end + 4]))
            if conn.body_end < 0:
                return  # refused
        if len(conn.pending) >= conn.body_end:
            self._dispatch(conn)

    def _read_head(self, conn: FrontConn, head: bytes) -> None:
        if _header_values(head, b"transfer-encoding"):
            self._refuse(conn, "411 Length Required", "send the body with a Content-Length", DRAIN_MAX_BYTES)
            return
        lengths = set(_header_values(head, b"content-length"))
        if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
            self._refuse(conn, "400 Bad Request", "invalid Content-Length", DRAIN_MAX_BYTES)
            return
        length = int(next(iter(lengths))) if lengths else 0
        if length > self.max_body_bytes:
            already = len(conn.pending) - len(head)
            self._refuse(conn, "413 Content Too Large",
                         f"request body is over the {self.max_body_bytes} byte limit", length - already)
            return
        conn.body_end = len(head) + length
        if length:
            conn.deadline = time.monotonic() + self.body_timeout_s
            if len(conn.pending) < conn.body_end and any(
                    v.lower() == b"100-continue" for v in _header_values(head, b"expect")):
                self._send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")

    def _dispatch(self, conn: FrontConn) -> None:
        """The whole request is buffered: hand it to a thread, which reads it from the buffer."""
        self.poller.unregister(conn.sock)
        self.reading.pop(conn, None)
        data, conn.pending = bytes(conn.pending), bytearray()
        if conn.parser is None:
            conn.preread = data
        else:
            conn.parser.unreader.unread(data)
        conn.data_ready = True
        conn.sock.setblocking(True)
        self.enqueue_req(conn)

    def _refuse(self, conn: FrontConn, status: str, message: str, drain: int) -> None:
        """Answer at once and close; first read and discard `drain` bytes the client is still sending."""
        self._send(conn, _answer(status, message))
        drain = min(drain, DRAIN_MAX_BYTES)
        if drain <= 0:
            self._close(conn)
            return
        conn.drain_left = drain
        conn.body_end = -1
        conn.pending = bytearray()
        conn.deadline = time.monotonic() + DRAIN_TIMEOUT_S

    def _send(self, conn: FrontConn, data: bytes) -> None:
        # Small answers fit in a fresh socket's send buffer; what does not is dropped with the connection.
        try:
            conn.sock.send(data)
        except OSError:
            pass

    def _close(self, conn: FrontConn) -> None:
        if conn in self.reading:
            self.reading.pop(conn)
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c in self.reading if c.deadline <= now]:
            if not conn.drain_left and conn.pending:  # a request had started: say why it ends
                self._send(conn, _answer("408 Request Timeout", "the request did not arrive in time"))
            self._close(conn)

    def finish_request(self, conn: FrontConn, fs: Any) -> None:
        # Bytes read past the answered request (pipelining) go back through the main loop's reader,
        # never straight to a thread that would block on the rest of them.
        if (self.alive and not fs.cancelled() and fs.exception() is None and fs.result()
                and conn.parser is not None and conn.parser.unreader.buf.getvalue()):
            self._read_request(conn, conn.parser.unreader.take_buffered())
            return
        super().finish_request(conn, fs)
