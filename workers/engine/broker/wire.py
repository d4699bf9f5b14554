"""A small blocking NATS publisher for threaded (WSGI) code: JetStream publish with ack, and plain publish.

Why not nats.py from a request thread: nats.py is asyncio-only, so a request thread must hand each
publish to a loop in another thread and wait; on this machine that hop cost 0.4-0.6 ms per call in
GIL hand-offs, more than the JetStream round trip itself (0.13 ms). This speaks the small part of the
NATS client protocol a publisher needs (CONNECT, PING/PONG, SUB, PUB, HPUB, MSG, HMSG) on one
blocking socket per thread, so a publish is one write and one read in the caller's own thread.

What it does not do: subscribe for the caller, TLS, NKEY/JWT credentials, or cluster failover across
several URLs. Long-lived subscriptions stay on nats.py (`workers.engine.broker.bridge`). A `tls://` URL or
credentials it does not speak make `supported()` false, and callers fall back to the bridge.

Imports no Django.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
from typing import Any
from urllib.parse import urlparse

from workers.engine.broker.errors import BrokerDown, BrokerError, NoResponders, PublishRejected, PublishTimeout

CRLF = b"\r\n"
MAX_CONTROL_LINE = 64 * 1024
IO_TIMEOUT_S = 5.0


class NotConnected(BrokerDown):
    """Could not reach the server: the message was certainly not stored."""


class AckTimeout(PublishTimeout):
    """No JetStream ack within the timeout: the message may be stored."""


def supported(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in ("nats", "") and bool(parsed.hostname)


class _Connection:
    def __init__(self, url: str, *, name: str, connect_timeout_s: float) -> None:
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 4222
        self.user = parsed.username
        self.password = parsed.password
        self.name = name
        self.inbox = f"_INBOX.{secrets.token_hex(11)}"
        self.next_reply = 0
        self.buffer = bytearray()
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=connect_timeout_s)
        except OSError as exc:
            raise NotConnected(f"cannot connect to NATS at {self.host}:{self.port}: {exc}") from exc
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self._handshake(connect_timeout_s)
        except (OSError, BrokerError) as exc:
            self.close()
            raise NotConnected(f"NATS handshake with {self.host}:{self.port} failed: {exc}") from exc

    def _handshake(self, timeout_s: float) -> None:
        self.sock.settimeout(timeout_s)
        line = self._read_line()
        if not line.startswith(b"INFO "):
            raise BrokerDown(f"expected INFO from the server, got {line[:80]!r}")
        options: dict[str, Any] = {
            "verbose": False, "pedantic": False, "headers": True, "no_responders": True,
            "protocol": 1, "lang": "python-sync", "version": "1", "name": self.name,
        }
        if self.user and self.password is None:
            options["auth_token"] = self.user
        elif self.user:
            options["user"], options["pass"] = self.user, self.password
        self.sock.sendall(b"CONNECT " + json.dumps(options).encode() + CRLF + b"PING" + CRLF)
        while True:
            line = self._read_line()
            if line == b"PONG":
                break
            if line.startswith(b"-ERR"):
                raise BrokerDown(line.decode(errors="replace"))
        self.sock.sendall(b"SUB " + self.inbox.encode() + b".* 1" + CRLF)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # --- reading ---------------------------------------------------------------------------

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("NATS closed the connection")
        self.buffer += chunk

    def _read_line(self) -> bytes:
        while True:
            end = self.buffer.find(CRLF)
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            if len(self.buffer) > MAX_CONTROL_LINE:
                raise BrokerDown("control line too long")
            self._fill()

    def _frame_in_buffer(self) -> tuple[bytes, bytes, bytes] | None:
        """Take one complete frame (kind, subject, headers+payload split later) off the buffer, if there is one."""
        end = self.buffer.find(CRLF)
        if end < 0:
            return None
        line = bytes(self.buffer[:end])
        parts = line.split()
        if not parts:
            del self.buffer[: end + 2]
            return (b"", b"", b"")
        if parts[0] in (b"MSG", b"HMSG"):
            total = int(parts[-1])
            if len(self.buffer) < end + 2 + total + 2:
                return None
            data = bytes(self.buffer[end + 2 : end + 2 + total])
            del self.buffer[: end + 2 + total + 2]
            return (line, parts[1], data)
        del self.buffer[: end + 2]
        return (line, b"", b"")

    def _handle_control(self, line: bytes) -> None:
        if line == b"PING":
            self.sock.sendall(b"PONG" + CRLF)
        elif line.startswith(b"-ERR"):
            raise PublishRejected(line.decode(errors="replace"))

    def _read_reply(self, reply: str) -> tuple[bytes, bytes]:
        """Read until the message for `reply` arrives; answer PINGs; skip stale replies."""
        while True:
            frame = self._frame_in_buffer()
            if frame is None:
                self._fill()
                continue
            line, subject, data = frame
            if not subject:
                self._handle_control(line)
                continue
            if subject.decode() != reply:
                continue  # a reply to an earlier publish that timed out: it no longer has a caller
            if line.startswith(b"HMSG"):
                header_size = int(line.split()[-2])
                return data[:header_size], data[header_size:]
            return b"", data

    def service(self) -> None:
        """Answer the server's PINGs that arrived while this connection only published."""
        self.sock.setblocking(False)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionResetError("NATS closed the connection")
                self.buffer += chunk
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(IO_TIMEOUT_S)
        while (frame := self._frame_in_buffer()) is not None:
            if not frame[1]:
                self._handle_control(frame[0])

    # --- writing ---------------------------------------------------------------------------

    def publish(self, subject: str, payload: bytes) -> None:
        self.service()
        self.sock.sendall(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload))

    def request_js(self, subject: str, payload: bytes, *, msg_id: str, timeout_s: float) -> dict[str, Any]:
        self.next_reply += 1
        reply = f"{self.inbox}.{self.next_reply}"
        headers = f"NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\n\r\n".encode()
        self.sock.sendall(
            b"HPUB %s %s %d %d\r\n%s%s\r\n"
            % (subject.encode(), reply.encode(), len(headers), len(headers) + len(payload), headers, payload)
        )
        self.sock.settimeout(timeout_s)
        try:
            status, body = self._read_reply(reply)
        except TimeoutError as exc:
            raise AckTimeout(f"no JetStream ack for {subject} within {timeout_s:.1f} s") from exc
        if status.startswith(b"NATS/1.0 503"):
            raise NoResponders(f"no stream listens on {subject} yet (JetStream is starting, or the pool's "
                               "subject is not in the stream yet)")
        try:
            ack: dict[str, Any] = json.loads(body)
        except ValueError as exc:
            raise PublishRejected(f"unreadable JetStream ack for {subject}: {body[:200]!r}") from exc
        if "error" in ack:
            raise PublishRejected(f"JetStream refused the publish to {subject}: {ack['error']}")
        return ack


class SyncPublisher:
    """One NATS connection per calling thread, opened on first use and reopened after a failure."""

    def __init__(self, url: str, *, name: str = "neutrino-gateway", connect_timeout_s: float = 1.0) -> None:
        self.url = url
        self.name = name
        self.connect_timeout_s = connect_timeout_s
        self._local = threading.local()
        self._all: list[_Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _Connection(self.url, name=self.name, connect_timeout_s=self.connect_timeout_s)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop(self) -> None:
        conn: _Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)

    def publish_js(self, subject: str, payload: bytes, *, msg_id: str, timeout_s: float = 5.0) -> int:
        """Publish to JetStream with `Nats-Msg-Id` and wait for the ack; returns the stream sequence."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                return int(conn.request_js(subject, payload, msg_id=msg_id, timeout_s=timeout_s)["seq"])
            except AckTimeout:
                self._drop()
                raise
            except (PublishRejected, NoResponders):
                raise
            except OSError as exc:
                # The connection went stale (server restarted): reconnect once and send again; the msg id
                # makes a second copy a duplicate JetStream drops.
                self._drop()
                if attempt == 2:
                    raise AckTimeout(f"publish to {subject} failed after reconnecting: {exc}") from exc
        raise AssertionError("unreachable")

    def publish(self, subject: str, body: dict[str, Any]) -> None:
        """Core NATS publish, fire and forget. Errors are swallowed: events are hints, not records."""
        data = json.dumps(body, separators=(",", ":"), default=str).encode()
        try:
            self._connection().publish(subject, data)
        except (OSError, BrokerError):
            self._drop()

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
