"""Connections to backends, and the keep-alive pool of one backend address.

Each connection is an asyncio.Protocol driving an httptools response parser;
it relays what it parses to the exchange (one request/response) it is
currently attached to. Between requests a connection rests in its pool.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

import httptools

from portside.worker.exchange import CONNECT, INVALID
from portside.worker.headers import (
    RESPONSE_SPECIAL,
    RESPONSE_SPECIAL_LENGTHS,
    add_field,
    connection_tokens,
    drop_named,
)

if TYPE_CHECKING:
    from portside.worker.exchange import Exchange
    from portside.worker.runtime import PassiveHealth

log = logging.getLogger("portside.worker")

# As in client.py: httptools' parser methods, looked up once.
_feed_data: Final = httptools.HttpResponseParser.feed_data
_should_keep_alive: Final = httptools.HttpResponseParser.should_keep_alive
_get_status_code: Final = httptools.HttpResponseParser.get_status_code


#: How long passive health first holds out a server that has not answered yet.
#: Docker reports `start` once the container's first process runs, and the
#: route goes live then, often before the application has bound its port:
#: until it does, the kernel answers a SYN with RST and connect() fails with
#: ECONNREFUSED (seen in the tests 2 ms after the route went live, even with
#: busybox httpd). Such a request never left, so it is resent to another
#: server unseen; but a full failure window (10 s by default, as in Traefik)
#: would keep a container that is ready idle for that long. So until a server
#: first answers, its ejection starts here and doubles up to the window: with
#: the default window, one that never comes up is held out for the full 10 s
#: from its eighth ejection on, 12.7 s (0.1 + 0.2 + ... + 6.4) after the first.
FIRST_EJECTION = 0.1


class InvalidResponse(Exception):
    """Raised in a parser callback for a response llhttp accepts but HTTP does not."""


class ResponseCallbacks:
    """The callback object of every response parser, as client.RequestCallbacks is
    of every request parser: four bound methods less per backend connection.

    The two are twins on purpose: each is typed with its own connection class,
    so that compiled code calls the connection's methods directly rather than
    looking them up by name (about 250 instructions per call).
    """

    __slots__ = ("feeding", "on_header", "on_headers_complete", "on_body", "on_message_complete")

    def __init__(self) -> None:
        self.feeding: UpstreamConnection | None = None
        self.on_header = _on_header
        self.on_headers_complete = _on_headers_complete
        self.on_body = _on_body
        self.on_message_complete = _on_message_complete


def _on_header(name: bytes, value: bytes) -> None:
    _CALLBACKS.feeding.on_header(name, value)  # type: ignore[union-attr]


def _on_headers_complete() -> None:
    _CALLBACKS.feeding.on_headers_complete()  # type: ignore[union-attr]


def _on_body(body: bytes) -> None:
    _CALLBACKS.feeding.on_body(body)  # type: ignore[union-attr]


def _on_message_complete() -> None:
    _CALLBACKS.feeding.on_message_complete()  # type: ignore[union-attr]


_CALLBACKS: Final = ResponseCallbacks()


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a backend."""

    __slots__ = (
        "pool",
        "transport",
        "parser",
        "exchange",
        "idle_since",
        "_fields",
        "_content_length",
        "_chunked",
        "_named",
        "_trailers",
        "_tunnel",
        "_complete",
        "_reusable",
        "_closed",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(_CALLBACKS)
        self.exchange: Exchange | None = None
        self.idle_since = 0.0
        self._fields: list[bytes] = []
        self._content_length = False
        self._chunked = False
        self._named: set[bytes] | None = None
        self._trailers: list[bytes] | None = None
        self._tunnel = False  # relaying raw bytes after a 101
        self._complete = False
        self._reusable = True
        self._closed = False

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.exchange is None:
            # A pooled connection that became readable while idle: the
            # backend closed it or sent garbage. Never reuse it (the race
            # httpcore guards against the same way).
            self.close()
            return
        client = self.exchange.client
        if self._tunnel:
            client.tunnel_data(data)
            return
        client.hold_writes()
        # Restored, not cleared, after, as in ClientConnection.data_received.
        callbacks = _CALLBACKS
        outer, callbacks.feeding = callbacks.feeding, self
        try:
            _feed_data(self.parser, data)
        except httptools.HttpParserUpgrade as exc:
            # The 101 head has been relayed: from here on, bytes pass as they are.
            self._complete = False
            self._reusable = False
            if self.exchange is not None and self.exchange.tunnel:
                self._tunnel = True
                rest = data[exc.args[0] :]
                if rest:
                    client.tunnel_data(rest)
            else:
                self.close()
        except httptools.HttpParserError as exc:
            self._reusable = False
            exchange, self.exchange = self.exchange, None
            self.close()
            # httptools raises "User callback error" for what a callback raised.
            reason = exc.__context__ if isinstance(exc.__context__, InvalidResponse) else exc
            if exchange is not None:
                exchange.upstream_failed(502, f"invalid response: {reason}", INVALID)
        else:
            if self._complete:
                self._finish()
        finally:
            callbacks.feeding = outer
            client.flush_writes()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.pool.forget(self)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.upstream_closed(clean=exc is None)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_paused()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_resumed()

    # -- httptools callbacks ------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        # None: no special name has this length, so no set lookup either.
        lname = name.lower() if (RESPONSE_SPECIAL_LENGTHS >> len(name)) & 1 else None
        if lname is None or lname not in RESPONSE_SPECIAL:
            add_field(self._fields, name, value)
        elif lname == b"content-length":
            self._content_length = True
            add_field(self._fields, name, value)
        elif lname == b"connection":
            self._named = connection_tokens(value, self._named)
        elif lname == b"transfer-encoding":
            self._chunked = True

    def on_headers_complete(self) -> None:
        if self._complete:
            # A second response head after a complete response, in the same
            # read: the backend is broken (or splitting responses). It is not
            # relayed, and the connection is not reused.
            self._reusable = False
            return
        status = _get_status_code(self.parser)
        if not 100 <= status < 600:
            # llhttp takes any three digits; RFC 9110 §15 defines 100 to 599.
            raise InvalidResponse(f"status {status} is not between 100 and 599")
        fields, self._fields = self._fields, []
        if self._named is not None:
            fields = drop_named(fields, self._named)
            self._named = None
        content_length, self._content_length = self._content_length, False
        chunked, self._chunked = self._chunked, False
        exchange = self.exchange
        if exchange is None:
            return
        if status < 200 and status != 101:
            # An interim response; llhttp completes it as a message of its own
            # and goes on parsing the final response on the same connection.
            exchange.interim_response(status, fields)
            return
        exchange.response_headers(status, fields, content_length, chunked)
        if exchange.raw_method == b"HEAD" and status != 204 and status != 304:
            # llhttp cannot be told that this response answers a HEAD
            # (MagicStack/httptools#47) and would wait for Content-Length
            # bytes that never come. End the message here; a fresh parser
            # reads the next response.
            if not _should_keep_alive(self.parser):
                self._reusable = False
            self.parser = httptools.HttpResponseParser(_CALLBACKS)
            self._complete = True

    def on_body(self, body: bytes) -> None:
        if self._complete or self.exchange is None:
            self._reusable = False  # bytes after a complete response: a broken backend
            return
        self.exchange.response_body(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is None or not exchange.final_seen:
            return
        if self._fields or self._content_length or self._chunked or self._named is not None:
            # Fields after a chunked body: its trailer section. The
            # end-to-end ones go on to the client; the rest (framing,
            # hop-by-hop) must not be trailers and is dropped.
            self._trailers = drop_named(self._fields, RESPONSE_SPECIAL) or None
            self._fields = []
            self._content_length = self._chunked = False
            self._named = None
        self._complete = True
        if not _should_keep_alive(self.parser):
            self._reusable = False

    # -- used by the exchange and the pool ----------------------------------

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def write_eof(self) -> None:
        """The client half-closed its side of a tunnel: pass the FIN on."""
        if not self._closed and self.transport.can_write_eof():  # type: ignore[union-attr]
            self.transport.write_eof()  # type: ignore[union-attr]

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.transport.writelines(parts)  # type: ignore[union-attr]

    def pause_reading(self) -> None:
        if not self._closed:
            self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        if not self._closed:
            self.transport.resume_reading()  # type: ignore[union-attr]

    def detach(self) -> None:
        """The exchange no longer wants this connection in mid-flight: drop it.

        Aborted, not closed: a close would first flush what is still queued
        for the backend, and wait forever if the backend is not reading (a
        tunnel whose client went away while everything was backed up).
        """
        self.exchange = None
        if not self._closed:
            self._closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.abort()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()

    def _finish(self) -> None:
        self._complete = False
        exchange, self.exchange = self.exchange, None
        if exchange is None:
            return
        # Reusable only if the whole request has been handed to the kernel:
        # a body still in our write buffer would be read by the backend as
        # the start of the next request.
        if (
            self._reusable and exchange.request_done and not self.transport.get_write_buffer_size()  # type: ignore[union-attr]
        ):
            self.pool.release(self)
        else:
            # A response that came before the request body was fully sent
            # leaves the backend in an unknown state: do not reuse.
            self.close()
        trailers, self._trailers = self._trailers, None
        exchange.response_complete(trailers)


class Dials:
    """A worker's connects to backends in flight, and their deadlines (dialTimeout,
    one setting for every backend).

    WorkerRuntime.sweep expires them once a second, rather than a timer per
    connect: asyncio.timeout held 0.8 KB more per connect in flight, and after a
    burst of 1,000 at once (a cold pool meeting 1,000 clients) the worker kept
    that 0.8 MB. So a connect may run up to a second past its timeout.
    """

    __slots__ = ("_timeout", "_loop", "_deadlines")

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._deadlines: dict[asyncio.Task[None], float] = {}

    def add(self, task: asyncio.Task[None]) -> None:
        """A connect starts now: it has until dialTimeout from now."""
        self._deadlines[task] = self._loop.time() + self._timeout

    def expired(self, task: asyncio.Task[None], now: float) -> bool:
        """Whether the connect has run past its deadline (so it was cancelled by expire)."""
        return now >= self._deadlines[task]

    def done(self, task: asyncio.Task[None]) -> None:
        del self._deadlines[task]

    def expire(self, now: float) -> None:
        """Cancel the connects past their deadline."""
        for task, deadline in self._deadlines.items():
            if now >= deadline:
                task.cancel()


class UpstreamPool:
    """Idle keep-alive connections to one backend address, most recent first."""

    __slots__ = (
        "host",
        "port",
        "failures",
        "_idle",
        "_loop",
        "_dials",
        "_max_idle",
        "_retired",
        "ejected_until",
        "_probing",
        "answered",
        "_next_ejection",
    )
    # A probe request that ends without a verdict (the client left, a
    # timeout) must not hold the backend out forever: after as long as the
    # next ejection would last, another request may probe it.

    def __init__(self, host: str, port: int, max_idle: int, dials: Dials) -> None:
        self.host = host
        self.port = port
        self._idle: list[UpstreamConnection] = []
        self._loop = asyncio.get_running_loop()
        self._dials = dials
        self._max_idle = max_idle
        #: The server left the configuration: connections still in use close when done.
        self._retired = False
        #: Passive health, per worker: consecutive connect failures and resets.
        self.failures = 0
        #: Loop time until which passive health keeps the server out; 0 if never ejected.
        self.ejected_until = 0.0
        self._probing = False
        #: Whether the server has answered once since it joined.
        self.answered = False
        #: How long the next ejection lasts (at most the failure window), which is
        #: also how long the others wait for a probe's verdict.
        self._next_ejection = FIRST_EJECTION

    # -- passive health ---------------------------------------------------------

    def accepting(self) -> bool:
        """Whether this backend may get a new request.

        After an ejection has run its time, exactly one request probes the
        backend before it takes full traffic again (half-open).
        """
        if not self.ejected_until:
            return True
        now = self._loop.time()
        if now < self.ejected_until:
            return False
        # This request probes; the others wait one more ejection for its verdict.
        self._probing = True
        self.ejected_until = now + self._next_ejection
        return True

    @property
    def ejected(self) -> bool:
        """Whether passive health holds this backend out of rotation right now."""
        return self.ejected_until > self._loop.time()

    def record_failure(self, passive: PassiveHealth) -> None:
        """A connect failure or reset: eject after too many in a row, or when the probe fails.

        The ejection lasts the failure window; until the server has first
        answered, FIRST_EJECTION at first, doubling each time. A failure of a
        request sent before the ejection began does not lengthen it.
        """
        self.failures += 1
        now = self._loop.time()
        if self.ejected_until > now and not self._probing:
            return  # a request sent before the ejection began: it changes nothing
        if self._probing or self.failures >= passive.max_failed_attempts:
            window = passive.failure_window
            if not self.answered:
                window = min(self._next_ejection, window)
            log.warning(
                "%s:%d ejected for %gs after %d consecutive failures%s",
                self.host,
                self.port,
                window,
                self.failures,
                "" if self.answered else " (it has not answered yet)",
            )
            self.ejected_until = now + window
            self._probing = False
            # Doubled while the server has not answered; the window once it has.
            self._next_ejection = min(2 * window, passive.failure_window)

    def record_success(self) -> None:
        """A response head arrived: the backend has answered, and is healthy again."""
        if self.ejected_until:
            log.info("%s:%d answers again; back in rotation", self.host, self.port)
        self.failures = 0
        self.ejected_until = 0.0
        self._probing = False
        self.answered = True

    # -- connections --------------------------------------------------------------

    def acquire(self) -> UpstreamConnection | None:
        """An idle connection, or None if a new one must be made."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn._closed:
                return conn
        return None

    def release(self, conn: UpstreamConnection) -> None:
        """Put a connection whose response completed back for reuse."""
        if self._retired or len(self._idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = self._loop.time()
        self._idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """Remove a connection that closed while it rested here."""
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    def connect(self, exchange: Exchange) -> None:
        """Open a new connection for an exchange; it is told the outcome."""
        task = self._loop.create_task(self._connect(exchange))
        self._dials.add(task)

    async def _connect(self, exchange: Exchange) -> None:
        task = asyncio.current_task()
        assert task is not None  # for mypyc: a coroutine run by connect()'s task
        try:
            _, conn = await self._loop.create_connection(  # type: ignore[type-var]
                lambda: UpstreamConnection(self), self.host, self.port
            )
        except asyncio.CancelledError:
            if not self._dials.expired(task, self._loop.time()):
                raise  # not the dial timeout: the worker is stopping
            exchange.upstream_failed(
                504, f"timed out connecting to {self.host}:{self.port}", CONNECT
            )
            return
        except OSError as exc:
            exchange.upstream_failed(
                502, f"cannot connect to {self.host}:{self.port}: {exc}", CONNECT
            )
            return
        finally:
            self._dials.done(task)
        if exchange.abandoned:
            self.release(conn)
        else:
            exchange.upstream_connected(conn)

    def sweep(self, now: float, idle_timeout: float) -> None:
        """Close connections idle for longer than idle_timeout (oldest first in the list)."""
        idle = self._idle
        while idle and now - idle[0].idle_since > idle_timeout:
            idle.pop(0).close()

    def close(self) -> None:
        """Retire the pool: close idle connections now, busy ones when their response ends."""
        self._retired = True
        for conn in list(self._idle):
            conn.close()
        self._idle.clear()
