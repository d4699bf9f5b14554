"""A NATS connection for threaded (WSGI) code: an asyncio loop in one background thread.

Request threads call the blocking methods here; each hands a coroutine to the
loop and waits for it with a timeout. Publishing an event never blocks. The
connection reconnects forever; while it is down, `publish_task` raises
`BrokerDown` at once instead of queueing in memory, so the gateway can answer 503.

Imports no Django.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from workers.engine.broker.connect import connect, shown
from workers.engine.broker.errors import BrokerDown, BrokerError, PublishTimeout

logger = logging.getLogger("neutrino.bridge")

Handler = Callable[[dict[str, Any]], None]


def _ack_result(subject: str, ack: asyncio.Future[Msg]) -> int | BrokerError:
    """A JetStream publish ack (`{"stream": ..., "seq": N}`) as its sequence, or the error it reports."""
    if not ack.done():
        ack.cancel()
        return PublishTimeout(f"JetStream did not acknowledge the publish to {subject} in time")
    msg = ack.result()
    try:
        body = json.loads(msg.data) if msg.data else {}
    except ValueError:
        body = {}
    if isinstance(body, dict) and isinstance(body.get("seq"), int):
        return int(body["seq"])
    error = body.get("error") if isinstance(body, dict) else None
    status = (msg.headers or {}).get("Status", "") if msg.headers is not None else ""
    described = error or (f"status {status} (no stream takes {subject}?)" if status else f"answer {msg.data[:200]!r}")
    return PublishTimeout(f"publish to {subject} was not stored: {described}")


class NatsBridge:
    def __init__(self, url: str, *, name: str = "neutrino-gateway", connect_timeout_s: float = 2.0) -> None:
        self.url = url
        self.name = name
        self.connect_timeout_s = connect_timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = threading.Thread(
            target=self._loop.run_forever, name="neutrino-nats", daemon=True
        )
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._subscriptions: list[tuple[str, Handler]] = []
        self._events_lock = threading.Lock()
        self._events: list[tuple[str, bytes]] = []  # handed over by publish_event, not yet sent by the loop
        self._events_scheduled = False
        self._started = threading.Event()
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------

    def attach(self, *, loop: asyncio.AbstractEventLoop, nc: Client) -> None:
        """Use a connection its owner opened and runs on `loop` (a worker's one connection), instead of
        starting a connection and a thread of its own.

        Call the blocking methods from threads other than `loop`'s; the owner closes the connection.
        """
        assert self._thread is not None and not self._thread.is_alive(), "attach before start, once"
        self._loop.close()
        self._loop, self._thread = loop, None
        self._nc, self._js = nc, nc.jetstream(timeout=5.0)
        self._started.set()

    def start(self) -> NatsBridge:
        assert self._thread is not None, "an attached bridge runs on its owner's loop"
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._connect_forever(), self._loop)
        # Give the first connection a moment so the first request finds it; never block long.
        self._started.wait(self.connect_timeout_s)
        return self

    async def _connect_forever(self) -> None:
        nc = await connect(self.url, name=self.name, logger=logger, connect_timeout_s=self.connect_timeout_s,
                           disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected)
        assert nc is not None  # no `until`: it returns once connected
        self._nc = nc
        self._js = nc.jetstream(timeout=5.0)
        for subject, handler in self._subscriptions:
            await self._subscribe(subject, handler)
        self._started.set()
        logger.info("connected to NATS at %s", shown(self.url))

    async def _on_disconnected(self) -> None:
        if self._closed:
            return  # closing on purpose
        logger.warning("disconnected from NATS at %s; reconnecting", shown(self.url))

    async def _on_reconnected(self) -> None:
        logger.info("reconnected to NATS at %s", shown(self.url))

    def close(self, timeout_s: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return  # attached: the owner closes its connection
        if self._nc is not None and self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._nc.drain(), self._loop)
            try:
                future.result(timeout_s)
            except Exception:
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    # --- calls from other threads -------------------------------------------------------------

    def call(self, coro_factory: Callable[[JetStreamContext, Client], Any], timeout_s: float) -> Any:
        """Run `coro_factory(js, nc)` on the loop and wait for its result (raises BrokerDown if not connected)."""
        if not self.connected or self._js is None or self._nc is None:
            raise BrokerDown(f"not connected to NATS at {shown(self.url)}")
        js, nc = self._js, self._nc
        future = asyncio.run_coroutine_threadsafe(coro_factory(js, nc), self._loop)
        try:
            return future.result(timeout_s)
        except (TimeoutError, FutureTimeout, nats.errors.TimeoutError) as exc:
            future.cancel()
            raise PublishTimeout(f"NATS did not answer within {timeout_s:.1f} s") from exc

    def publish_task(self, subject: str, payload: bytes, *, msg_id: str, timeout_s: float = 5.0) -> int:
        """Publish to JetStream and wait for the ack; returns the stream sequence."""

        async def publish(js: JetStreamContext, nc: Client) -> int:
            ack = await js.publish(subject, payload, timeout=timeout_s, headers={"Nats-Msg-Id": msg_id})
            return int(ack.seq)

        try:
            return int(self.call(publish, timeout_s + 0.5))
        except BrokerError:
            raise
        except Exception as exc:
            # Anything else (no responders while JetStream restarts, connection lost mid-call) may
            # or may not have stored the message; the caller retries with the same msg id.
            raise PublishTimeout(f"publish to {subject} failed: {exc!r}") from exc

    def publish_tasks(
        self, messages: Sequence[tuple[str, bytes, str]], *, timeout_s: float = 5.0
    ) -> list[int | BrokerError]:
        """Publish many `(subject, payload, msg_id)` to JetStream at once, pipelined: all are sent, then
        all acks awaited (one reply inbox for the lot, not a request per message).

        Returns, in order, each message's stream sequence or the BrokerError it got (a
        PublishTimeout may still have been stored; republish it with the same msg id). Raises
        BrokerDown, with nothing sent, when not connected.
        """

        async def publish_all(js: JetStreamContext, nc: Client) -> list[int | BrokerError]:
            loop = asyncio.get_running_loop()
            acks: list[asyncio.Future[Msg]] = [loop.create_future() for _ in messages]
            inbox = nc.new_inbox()

            async def on_ack(msg: Msg) -> None:
                index = int(msg.subject.rsplit(".", 1)[1])
                if 0 <= index < len(acks) and not acks[index].done():
                    acks[index].set_result(msg)

            subscription = await nc.subscribe(f"{inbox}.*", cb=on_ack)
            try:
                for index, (subject, payload, msg_id) in enumerate(messages):
                    await nc.publish(subject, payload, reply=f"{inbox}.{index}", headers={"Nats-Msg-Id": msg_id})
                await nc.flush(timeout=max(1, int(timeout_s)))
                await asyncio.wait(acks, timeout=timeout_s)
            finally:
                await subscription.unsubscribe()
            return [_ack_result(subject, ack) for (subject, _, _), ack in zip(messages, acks, strict=True)]

        if not messages:
            return []
        return list(self.call(publish_all, timeout_s + 1.0 + len(messages) / 10_000))

    def publish_event(self, subject: str, body: dict[str, Any]) -> None:
        """Fire and forget: events feed live views, the database stays the record.

        Events published while the loop has not yet sent the earlier ones go in one hand-off: a worker
        finishing a batch of tasks wakes the loop once, not once per event (a wake-up and a task each cost
        more than the publish itself).
        """
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        data = json.dumps(body, separators=(",", ":"), default=str).encode()
        with self._events_lock:
            self._events.append((subject, data))
            if self._events_scheduled:
                return
            self._events_scheduled = True
        self._loop.call_soon_threadsafe(self._send_events, nc)

    def _send_events(self, nc: Client) -> None:
        """On the loop: send every event handed over so far."""
        with self._events_lock:
            events, self._events = self._events, []
            self._events_scheduled = False
        self._loop.create_task(self._publish_quietly(nc, events))

    def publish_events(self, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Fire and forget many `(subject, body)` events: one hand-off to the loop, which sends them together."""
        nc = self._nc
        if nc is None or not nc.is_connected or not events:
            return
        encoded = [(subject, json.dumps(body, separators=(",", ":"), default=str).encode()) for subject, body in events]
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._publish_quietly(nc, encoded)))

    async def _publish_quietly(self, nc: Client, events: list[tuple[str, bytes]]) -> None:
        try:
            for subject, data in events:
                await nc.publish(subject, data)
        except Exception as exc:
            logger.debug("event publish failed: %s", exc)

    def subscribe(self, subject: str, handler: Handler) -> None:
        """Call `handler(json_body)` on the bridge thread for each message; kept across reconnects."""
        self._subscriptions.append((subject, handler))
        if self._nc is not None:
            asyncio.run_coroutine_threadsafe(self._subscribe(subject, handler), self._loop).result(5.0)

    def subscribe_temporary(self, subject: str, handler: Handler, timeout_s: float = 2.0) -> Callable[[], None]:
        """Subscribe until the returned function is called (not renewed after a reconnect: callers re-read).

        Raises BrokerDown when not connected.
        """
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise BrokerDown(f"not connected to NATS at {shown(self.url)}")

        async def on_message(msg: Msg) -> None:
            try:
                handler(json.loads(msg.data))
            except Exception:
                logger.exception("handler for %s failed", subject)

        sub = asyncio.run_coroutine_threadsafe(nc.subscribe(subject, cb=on_message), self._loop).result(timeout_s)

        def unsubscribe() -> None:
            async def stop() -> None:
                try:
                    await sub.unsubscribe()
                except Exception:
                    pass

            self._loop.call_soon_threadsafe(lambda: self._loop.create_task(stop()))

        return unsubscribe

    async def _subscribe(self, subject: str, handler: Handler) -> None:
        assert self._nc is not None

        async def on_message(msg: Msg) -> None:
            try:
                handler(json.loads(msg.data))
            except Exception:
                logger.exception("handler for %s failed", subject)

        await self._nc.subscribe(subject, cb=on_message)
