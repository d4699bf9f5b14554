"""A real HTTP server that receives webhooks, for the tests of alerts and callbacks.

It listens on a free port of 127.0.0.1 in a thread of the test process, records every request (headers
and raw body), and answers with the status codes it is told to, in order (then 200).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from neutrino.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify_signature


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event(self) -> str:
        return self.headers.get(EVENT_HEADER.lower(), "")

    @property
    def delivery(self) -> str:
        return self.headers.get(DELIVERY_HEADER.lower(), "")

    def signed_by(self, secret: str) -> bool:
        return verify_signature(secret, self.body, self.headers.get(SIGNATURE_HEADER.lower(), ""))


class Receiver:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._answers: list[int] = []
        self.received: list[Received] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer_next(self, *statuses: int) -> None:
        """The next requests get these statuses, in order; later ones 200."""
        with self._lock:
            self._answers.extend(statuses)

    def requests(self, event: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if event is None or r.event == event]

    def _take(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            status = self._answers.pop(0) if self._answers else 200
            self.received.append(Received(path=path, headers=headers, body=body, answered=status))
            return status


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = receiver._take(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            answer = b'{"ok": true}' if status < 300 else b"receiver says no"
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
