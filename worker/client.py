"""The client side of the proxy: one Protocol per accepted connection.

The protocol is also the httptools request parser's callback object, as in
uvicorn's httptools_impl. Requests are routed as soon as their headers are
complete. Pipelined requests (RFC 9112 §9.3.2) queue behind the one in
flight and the socket stops being read until the queue drains, so a client
cannot make the proxy buffer without bound.

llhttp (inside httptools) already refuses most malformed framing. What it
lets through, or only notices after reporting the head, is checked here
before the request is routed, so that nothing ambiguous reaches a backend
(request smuggling): a Transfer-Encoding other than `chunked`, a missing or
repeated Host, an absolute-form target naming another host. The entry
point's limits answer 414, 431, 413 and 408.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Final

import httptools

from portside.worker.exchange import Exchange
from portside.worker.headers import (
    FORWARDED,
    REQUEST_SPECIAL,
    REQUEST_SPECIAL_LENGTHS,
    ForwardedBy,
    add_field,
    connection_tokens,
    drop_named,
)
from portside.worker.responses import error_response
from portside.worker.routing import normalize_host

log = logging.getLogger("portside.worker")

if TYPE_CHECKING:
    from portside.worker.runtime import EntryPointRuntime, WorkerRuntime

# Reasons to stop reading from the client; reading resumes when none is left.
_PAUSE_PIPELINE: Final = 1  # a pipelined request waits behind the one in flight
_PAUSE_UPSTREAM: Final = 2  # the backend is not taking the request body fast enough
_PAUSE_UPGRADE: Final = 4  # what follows an Upgrade request waits for the backend's answer

#: Lingering close, as nginx's lingering_timeout and lingering_time: after the last
#: response, what the client still sends is read and dropped until it has been quiet
#: this long, or for at most the second figure, in seconds.
LINGER_QUIET: Final = 5.0
LINGER_MAX: Final = 30.0

# httptools' parser methods, taken from the class once: a call through them skips
# looking the method up by name (with upstream.py's three, 600 instructions less
# per proxied request).
_feed_data: Final = httptools.HttpRequestParser.feed_data
_should_keep_alive: Final = httptools.HttpRequestParser.should_keep_alive
_get_method: Final = httptools.HttpRequestParser.get_method


class _Closing(Exception):
    """Raised in a parser callback: the connection is closing, parse nothing more."""


class Rejected(Exception):
    """Raised in a parser callback: answer the request with `status` and close."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class RequestCallbacks:
    """The callback object of every request parser, passing each call to the
    connection whose bytes are being fed (set by ClientConnection.data_received).

    httptools binds a parser's callbacks once, when the parser is made. With
    the connection itself as the callback object, that was five bound methods
    per connection, 440 bytes of its memory; these are plain functions, bound
    once per worker.
    """

    __slots__ = (
        "feeding",
        "on_url",
        "on_header",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
    )

    def __init__(self) -> None:
        self.feeding: ClientConnection | None = None
        self.on_url = _on_url
        self.on_header = _on_header
        self.on_headers_complete = _on_headers_complete
        self.on_body = _on_body
        self.on_message_complete = _on_message_complete


def _on_url(url: bytes) -> None:
    _CALLBACKS.feeding.on_url(url)  # type: ignore[union-attr]


def _on_header(name: bytes, value: bytes) -> None:
    _CALLBACKS.feeding.on_header(name, value)  # type: ignore[union-attr]


def _on_headers_complete() -> None:
    _CALLBACKS.feeding.on_headers_complete()  # type: ignore[union-attr]


def _on_body(body: bytes) -> None:
    _CALLBACKS.feeding.on_body(body)  # type: ignore[union-attr]


def _on_message_complete() -> None:
    _CALLBACKS.feeding.on_message_complete()  # type: ignore[union-attr]


_CALLBACKS: Final = RequestCallbacks()


class ClientConnection(asyncio.Protocol):
    """One client connection on one entry point."""

    __slots__ = (
        "runtime",
        "entry_point",
        "loop",
        "transport",
        "parser",
        "client_ip",
        "forwarded",
        "current",
        "write_paused",
        "last_active",
        "closing",
        "_queue",
        "_parsing",
        "_url",
        "_fields",
        "_raw_host",
        "_content_length",
        "_chunked",
        "_connection",
        "_body_left",
        "_head_bytes",
        "_head_since",
        "_upgrade",
        "_upgrade_rest",
        "_tunnel",
        "_incoming",
        "_named",
        "_paused",
        "_closed",
        "_bad_request",
        "_eof",
        "_shut",
        "_starting",
        "_held",
        "_lingering",
        "_linger_since",
    )

    def __init__(self, runtime: WorkerRuntime, entry_point: EntryPointRuntime) -> None:
        self.runtime = runtime
        self.entry_point = entry_point
        self.loop = runtime.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(_CALLBACKS)
        self.client_ip = ""
        self.forwarded: ForwardedBy | None = None
        self.current: Exchange | None = None
        self.write_paused = False
        self.last_active = 0.0
        #: No new request will be served after the one in flight (shutdown).
        self.closing = False
        #: Pipelined requests behind the one in flight. Made on the first one: most
        #: connections never pipeline, and an empty deque costs 760 bytes.
        self._queue: deque[Exchange] | None = None
        self._parsing: Exchange | None = None
        self._url = b""
        self._fields: list[bytes] = []
        self._raw_host: bytes | None = None
        self._content_length: bytes | None = None
        self._chunked = False
        self._connection = False  # a Connection or Proxy-Connection field was seen
        #: Body bytes a chunked request may still send (maxBodyBytes); None: no limit.
        self._body_left: int | None = None
        #: Bytes received of a request head not yet complete, and since when (sweep).
        self._head_bytes = 0
        self._head_since = 0.0
        self._upgrade: bytes | None = None
        #: Bytes after an Upgrade request: tunnel data after a 101, else the next request.
        self._upgrade_rest: bytes | None = None
        self._tunnel = False  # a 101 turned the connection into a byte tunnel
        self._incoming: dict[bytes, bytes] | None = None
        self._named: set[bytes] | None = None
        self._paused = 0
        self._closed = False
        #: The status for a bad request queued behind the one in flight; 0: none.
        self._bad_request = 0
        self._eof = False  # the client half-closed: close once it is answered
        self._shut = False  # close() was called: no further request is served
        self._starting = False
        self._held: list[bytes] | None = None
        #: Closed for writing; reading on only to drop what the client still sends.
        self._lingering = False
        self._linger_since = 0.0

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        ep = self.entry_point
        by = self.forwarded = ep.forwarded_by(peer[0] if isinstance(peer, tuple) else "")
        self.client_ip = by.ip  # one string per IP, not one per connection
        self.last_active = self.loop.time()
        self.runtime.connections.add(self)
        ep.open += 1
        if ep.open >= ep.limits.max_connections:
            ep.acceptor.pause()  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self._tunnel:
            self.last_active = self.loop.time()
            upstream = self.current.upstream  # type: ignore[union-attr]
            if upstream is not None:
                upstream.write(data)
            return
        if self._lingering:
            self.last_active = self.loop.time()
            return
        if self._parsing is None:
            # Between requests every byte belongs to a head: bound them, so
            # that no header, however split, can grow without limit.
            self._head_bytes += len(data)
        # Restored, not cleared, after: a callback can feed bytes again before
        # this feed ends (what followed a declined upgrade).
        callbacks = _CALLBACKS
        outer, callbacks.feeding = callbacks.feeding, self
        try:
            self._feed(data)
        finally:
            callbacks.feeding = outer

    def _feed(self, data: bytes) -> None:
        while data:
            try:
                _feed_data(self.parser, data)
            except httptools.HttpParserUpgrade as exc:
                # httptools stops at the end of an Upgrade request. What
                # follows is tunnel data if the backend switches protocols,
                # else the next pipelined request: it waits for the answer.
                rest = data[exc.args[0] :]
                if self.current is None and not self._queue:
                    # Answered already (404, 503, an error): no tunnel can
                    # follow, so what comes next is the next request.
                    data = rest
                    continue
                self._upgrade_rest = rest
                self._pause(_PAUSE_UPGRADE)
            except httptools.HttpParserCallbackError as exc:
                rejected = exc.__context__
                if isinstance(rejected, _Closing):
                    pass
                elif isinstance(rejected, Rejected):
                    self._reject(rejected.status)
                else:
                    # Our own bug inside a callback, not the client's fault.
                    log.exception("internal error while handling a request")
                    self._reject()
            except httptools.HttpParserError:
                self._reject()
            else:
                if self._parsing is None and self._head_bytes > self.entry_point.max_head:
                    self._reject(431)
            return

    def eof_received(self) -> bool:
        """The client half-closed (RFC 9112 §9.6): answer what it sent, then close.

        A request whose body was cut short can never complete; that closes
        at once. In a tunnel the FIN is passed on, and the backend's close
        closes the client.
        """
        if self._lingering:
            return False  # the client has read what it wanted: close now
        if self._tunnel:
            upstream = self.current.upstream  # type: ignore[union-attr]
            if upstream is None:
                return False
            upstream.write_eof()
            return True
        if self._parsing is not None or (self.current is None and not self._queue):
            return False
        self._eof = True
        return True  # keep the transport open for writing

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.runtime.connections.discard(self)
        ep = self.entry_point
        ep.open -= 1
        if ep.open < ep.limits.max_connections:
            ep.acceptor.resume()  # type: ignore[union-attr]
        if self.current is not None:
            self.current.abandon()
            self.current = None
        while self._queue:
            self._queue.popleft().abandon()

    def pause_writing(self) -> None:
        self.write_paused = True
        upstream = self.current.upstream if self.current is not None else None
        if upstream is not None:
            upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        upstream = self.current.upstream if self.current is not None else None
        if upstream is not None:
            upstream.resume_reading()

    # -- httptools callbacks ------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.entry_point.max_uri:
            raise Rejected(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        # None: no special name has this length, so no set lookup either.
        lname = name.lower() if (REQUEST_SPECIAL_LENGTHS >> len(name)) & 1 else None
        if lname is None or lname not in REQUEST_SPECIAL:
            add_field(self._fields, name, value)
        elif lname == b"host":
            if self._raw_host is not None:
                raise Rejected(400)  # RFC 9112 §3.2: more than one Host
            # Not among the fields: request_head sends it first, on its own.
            self._raw_host = value
        elif lname == b"content-length":
            # llhttp has checked it: digits only, never twice.
            self._content_length = value
            add_field(self._fields, name, value)
        elif lname in FORWARDED:
            if self.forwarded.trusted:  # type: ignore[union-attr]
                incoming = self._incoming
                if incoming is None:
                    incoming = self._incoming = {}
                previous = incoming.get(lname)
                incoming[lname] = value if previous is None else previous + b", " + value
        elif lname == b"connection":
            self._connection = True
            self._named = connection_tokens(value, self._named)
        elif lname == b"proxy-connection":
            # Dropped, but llhttp reads keep-alive from it as from Connection.
            self._connection = True
        elif lname == b"upgrade":
            self._upgrade = value
        elif lname == b"transfer-encoding":
            # llhttp refuses Transfer-Encoding with Content-Length, but only
            # after reporting the head does it refuse a final coding other
            # than chunked, and it takes "gzip, chunked". A proxy that cannot
            # decode a coding must not pass it on (RFC 9112 §6.1): only a
            # single `chunked` is accepted.
            if self._chunked or value.strip().lower() != b"chunked":
                raise Rejected(400)
            self._chunked = True

    def on_headers_complete(self) -> None:
        if self._shut:
            # A response that closes the connection went out while later
            # requests were still in this read: the client was told they
            # will not be served, so they must not reach a backend.
            raise _Closing
        parser = self.parser
        fields = self._fields
        if self._named is not None:
            fields = drop_named(fields, self._named)
        keep_alive = _should_keep_alive(parser)
        # Without a Connection (or Proxy-Connection) field llhttp keeps only
        # HTTP/1.1 alive, so then the version, a str built on every call,
        # need not be asked.
        version = "1.1" if keep_alive and not self._connection else parser.get_http_version()
        raw_host = self._raw_host
        if raw_host is None:
            if version != "1.0":
                raise Rejected(400)  # RFC 9112 §3.2: HTTP/1.1 requires Host
            raw_host = b""
        self._check_head(version, raw_host, fields)
        method = _get_method(parser)
        has_body = self._chunked or (self._content_length or b"0") != b"0"
        upgrade = self._upgrade
        if upgrade is not None:
            # Only an upgrade the Connection header asks for (RFC 9110 §7.8).
            self._upgrade = None
            if self._named is None or b"upgrade" not in self._named:
                upgrade = None
            elif has_body:
                # llhttp hands the body over as tunnel data, so the backend
                # would wait for a body that cannot be sent before its answer.
                raise Rejected(400)
        if method == b"CONNECT":
            # llhttp tunnels after a CONNECT too; a reverse proxy does not
            # open tunnels to arbitrary hosts.
            raise Rejected(501)
        exchange = Exchange(
            self,
            method,
            self._url,
            fields,
            raw_host,
            version == "1.0",
            keep_alive and not self.closing,
            self._chunked,
            has_body,
            self._incoming,
            upgrade,
        )
        if self._chunked:
            self._body_left = self.entry_point.max_body
        # Reset for the next request here rather than in on_message_begin:
        # one parser callback less per request.
        self._url = b""
        self._fields = []
        self._raw_host = None
        self._content_length = None
        self._chunked = False
        self._connection = False
        self._incoming = None
        self._named = None
        self._head_bytes = 0
        self._head_since = 0.0
        self._parsing = exchange
        if self.current is None:
            self.current = exchange
            exchange.start()
        else:
            if self._queue is None:
                self._queue = deque()
            self._queue.append(exchange)
            self._pause(_PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        if self._body_left is not None:
            self._body_left -= len(body)
            if self._body_left < 0:
                raise Rejected(413)
        self._parsing.request_body(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        exchange, self._parsing = self._parsing, None
        if exchange.request_chunked:  # type: ignore[union-attr]
            self._body_left = None
            # Fields after a chunked body are its trailer section, which the
            # parser reported through on_header like header fields.
            trailers = drop_named(self._fields, REQUEST_SPECIAL) if self._fields else None
            self._fields = []
            self._raw_host = self._content_length = self._incoming = self._named = None
            self._chunked = self._connection = False
            exchange.request_complete(trailers)  # type: ignore[union-attr]
        else:
            exchange.request_complete()  # type: ignore[union-attr]

    # -- used by exchanges and the runtime ------------------------------------

    def hold_writes(self) -> None:
        """Collect writes until flush_writes().

        A backend's response head and body usually arrive in one read; sent
        together they cost one writev() instead of one send() each, and
        syscalls are most of a proxy's CPU time.
        """
        if self._held is None:
            self._held = []

    def flush_writes(self) -> None:
        held, self._held = self._held, None
        if held and not self._closed:
            self.transport.writelines(held)  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
        elif not self._closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        if self._held is not None:
            self._held.extend(parts)
        elif not self._closed:
            self.transport.writelines(parts)  # type: ignore[union-attr]

    def abort(self) -> None:
        """Cut the connection: a response already begun cannot be completed."""
        self._held = None
        if not self._closed:
            self.transport.abort()  # type: ignore[union-attr]

    def close(self, linger: bool = False) -> None:
        """Close after what is written; `linger` when the client may still be sending.

        Closing a socket with unread input makes the kernel reset the
        connection (RFC 1122 §4.2.2.13), and a reset can destroy the response
        the client has not read yet. So with `linger` only the sending side is
        shut (FIN after the response), and what still arrives is dropped
        until the client closes or has been quiet for LINGER_QUIET seconds.
        """
        self.flush_writes()
        self._shut = True
        if self._closed:
            return
        if not linger or self._eof or self._lingering:
            self.transport.close()  # type: ignore[union-attr]
            return
        self._lingering = True
        self._linger_since = self.last_active = self.loop.time()
        self.transport.write_eof()  # type: ignore[union-attr]
        if self._paused:
            self._paused = 0
            self.transport.resume_reading()  # type: ignore[union-attr]

    @property
    def idle(self) -> bool:
        """True when closing loses nothing: between requests, or while only the
        rest of a body is read to be dropped, its response complete (see
        Exchange._finish_response, which marks it active, as each dropped piece
        does). The idle timeout and a drain so close a client that stops sending
        such a body as they close one that sends nothing more."""
        current = self.current
        if current is None:
            return self._parsing is None
        return current.response_done

    def pause_reading_for(self, exchange: Exchange) -> None:
        if exchange is self.current:
            self._pause(_PAUSE_UPSTREAM)

    def resume_reading_for(self, exchange: Exchange) -> None:
        if exchange is self.current:
            self._resume(_PAUSE_UPSTREAM)

    def exchange_finished(self, exchange: Exchange) -> None:
        """The current exchange is complete in both directions: serve the next."""
        self.current = None
        self._resume(_PAUSE_UPSTREAM)
        self.last_active = self.loop.time()
        # Close only when the response said so. One that promised keep-alive
        # before a drain began leaves the connection open: the client's next
        # request, maybe already on its way, is answered with Connection:
        # close, or the drain closes the connection once it has been quiet.
        if not exchange.keep_alive:
            # Reading is paused while requests (or a bad one) wait behind this
            # one, and one may be arriving: they will not be answered, and
            # what is still unread must not make the close a reset.
            self.close(linger=bool(self._paused) or self._parsing is not None)
            return
        # A bad request waiting behind this one is answered only now, and only
        # if the connection goes on: after a response that ends by closing
        # (HTTP/1.0, close-delimited) any further byte would join its body.
        if self._bad_request and not self._queue:
            self._reject(self._bad_request)
            return
        if self._eof:
            self.close()
            return
        if exchange.upgrade is not None and self._upgrade_rest is not None:
            # The backend declined the upgrade: what followed the request is
            # the next request.
            rest, self._upgrade_rest = self._upgrade_rest, None
            self._resume(_PAUSE_UPGRADE)
            if rest:
                self.data_received(rest)
            return
        if self._starting:
            return  # called from inside the loop below, which starts the next one
        # A loop, not recursion: queued requests the proxy answers itself
        # (404, 503) finish inside start(), and hundreds of them pipelined
        # would otherwise nest that deep.
        self._starting = True
        try:
            while self.current is None and self._queue and not self._closed:
                following = self._queue.popleft()
                self.current = following
                if not self._queue and not self._bad_request:
                    self._resume(_PAUSE_PIPELINE)
                following.start()
        finally:
            self._starting = False

    def start_tunnel(self) -> None:
        """The backend switched protocols: relay bytes both ways from now on."""
        self._tunnel = True
        self.last_active = self.loop.time()
        rest, self._upgrade_rest = self._upgrade_rest, None
        if rest:
            self.current.upstream.write(rest)  # type: ignore[union-attr]
        self._resume(_PAUSE_UPGRADE)

    def tunnel_data(self, data: bytes) -> None:
        """Bytes from the backend's side of a tunnel."""
        self.last_active = self.loop.time()
        self.write(data)

    def sweep(self, now: float) -> None:
        """Once a second: enforce the tunnel, read-header, idle and lingering timeouts."""
        if self._lingering:
            if now - self.last_active > LINGER_QUIET or now - self._linger_since > LINGER_MAX:
                self.transport.close()  # type: ignore[union-attr]
        elif self._tunnel:
            if now - self.last_active > self.entry_point.limits.tunnel_idle_timeout:
                self.close()  # connection_lost closes the backend side too
        elif self._head_bytes and self._parsing is None and self.current is None:
            # A request head has begun and is not complete (a slowloris).
            if not self._head_since:
                self._head_since = now
            elif now - self._head_since > self.entry_point.limits.read_header_timeout:
                self._reject(408)
        elif self.idle and now - self.last_active > self.entry_point.idle_timeout:
            self.close()

    # -- internals ------------------------------------------------------------

    def _check_head(self, version: str, raw_host: bytes, fields: list[bytes]) -> None:
        """What llhttp does not check about a complete head; raises Rejected."""
        if version != "1.1" and version != "1.0":
            raise Rejected(505)
        ep = self.entry_point
        if len(fields) > ep.max_field_items:
            raise Rejected(431)
        # _head_bytes counts whole reads, so it can include a body or the next
        # request: only past the limit is the head itself measured.
        if self._head_bytes > ep.max_head and (
            len(self._url) + len(self._raw_host or b"") + sum(map(len, fields)) > ep.max_head
        ):
            raise Rejected(431)
        length = self._content_length
        limit = self.entry_point.max_body
        if length is not None and limit is not None and int(length) > limit:
            raise Rejected(413)
        target = self._url
        if target[:1] != b"/" and target != b"*":
            # absolute-form (RFC 9112 §3.2.2): its authority must be the Host
            # the request is routed by, or routing and backend would disagree.
            scheme, sep, rest = target.partition(b"://")
            authority = rest.partition(b"/")[0].partition(b"?")[0]
            if not sep or scheme.lower() not in (b"http", b"https", b"ws", b"wss"):
                raise Rejected(400)
            if normalize_host(authority.rpartition(b"@")[2]) != normalize_host(raw_host):
                raise Rejected(400)

    def _reject(self, status: int = 400) -> None:
        """Answer a request that cannot be served (400, 408, 413, 414, 431, 505) and close.

        Requests before the bad one are answered first, in order.
        """
        current = self.current
        if self._parsing is not None and self._parsing is not current and self._queue:
            self._queue.pop()  # the malformed one was queued behind others
            self._parsing = None
        if current is not None and self._parsing is None:
            self._bad_request = status
            self._pause(_PAUSE_PIPELINE)
            return
        self._parsing = None
        if current is not None:
            # The request in flight turned out malformed part-way through its body.
            self.current = None
            done = current.response_done
            if not current.response_started:
                current.status = status  # counted with the refusal that answers it
            current.abandon()
            if done:
                # Its response went out whole before the body ended: the
                # client has all it needs, and the body's framing is lost.
                self.close(linger=True)
                return
            if current.response_started:
                self.abort()
                return
        else:
            self._record_rejected(status)
        self.write(error_response(status, keep_alive=False))
        self.close(linger=True)

    def _record_rejected(self, status: int) -> None:
        """Count and log a request refused before it became an exchange (400, 408, 431...).

        What the parser got of it is logged: the target if it was read, and the
        method only then, since llhttp reports DELETE (method 0) for a request
        line it could not read.
        """
        raw_host = self._raw_host or b""
        refused = Exchange(
            self,
            raw_method=self.parser.get_method() if self._url else b"-",
            target=self._url or b"-",
            fields=[],
            raw_host=raw_host,
            http10=False,
            keep_alive=False,
            chunked=False,
            has_body=False,
            incoming=None,
        )
        refused.status = status
        self.runtime.stats.record(refused)

    def _pause(self, reason: int) -> None:
        if not self._paused and not self._closed:
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self._closed:
                self.transport.resume_reading()  # type: ignore[union-attr]
