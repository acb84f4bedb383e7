"""One request and its response, relayed between a client and a backend.

An exchange is created when a request's headers are complete. It routes the
request, takes a connection from the chosen server's pool (or opens one),
and relays both bodies with back-pressure. It is done when the request has
been read to its end and the response written to its end; only then may the
client connection start the next (pipelined) request, which keeps responses
in request order (RFC 9112 §9.3.2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from portside.worker import headers as hdr
from portside.worker.responses import error_response
from portside.worker.routing import normalize_host
from portside.worker.stats import clock

if TYPE_CHECKING:
    import asyncio

    from portside.worker.balancer import Server
    from portside.worker.client import ClientConnection
    from portside.worker.internal import InternalRoute
    from portside.worker.routing import Route
    from portside.worker.upstream import UpstreamConnection

log = logging.getLogger("portside.worker")

#: Request body bytes held while the backend connection is being opened.
#: Past this the client is paused, so memory stays bounded.
_PENDING_LIMIT: Final = 256 * 1024
_LAST_CHUNK: Final = b"0\r\n\r\n"
#: RFC 9110 §9.2.2: methods a client may repeat; a proxy may resend only these.
IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# Why a backend exchange failed (compared by identity).
CONNECT: Final = "connect"
RESET: Final = "reset"
TIMEOUT: Final = "timeout"
INVALID: Final = "invalid"


class Exchange:
    """A request/response pair in flight. It is also the RequestView the rules read."""

    __slots__ = (
        "client",
        "raw_method",
        "target",
        "fields",
        "incoming",
        "raw_host",
        "http10",
        "keep_alive",
        "request_chunked",
        "has_body",
        "upgrade",
        "tunnel",
        "request_done",
        "abandoned",
        "upstream",
        "route",
        "server",
        "_tried",
        "_attempts_left",
        "_replay",
        "_replay_size",
        "_interim_sent",
        "_continued",
        "_head",
        "_pending",
        "_pending_size",
        "final_seen",
        "response_started",
        "_response_done",
        "_out_chunked",
        "_no_body",
        "_close_delimited",
        "_discard_body",
        "_timer",
        "_path",
        "_query",
        "status",
        "started",
    )

    def __init__(
        self,
        client: ClientConnection,
        raw_method: bytes,
        target: bytes,
        fields: list[bytes],
        raw_host: bytes,
        http10: bool,
        keep_alive: bool,
        chunked: bool,
        has_body: bool,
        incoming: dict[bytes, bytes] | None,
        upgrade: bytes | None = None,
    ) -> None:
        self.client = client
        self.raw_method = raw_method
        self.target = target
        #: The end-to-end request fields, flat: name, ": ", value, CRLF, ...
        self.fields = fields
        #: X-Forwarded-* values from a trusted peer, else None.
        self.incoming = incoming
        self.raw_host = raw_host
        self.http10 = http10
        self.keep_alive = keep_alive
        self.request_chunked = chunked
        self.has_body = has_body
        #: The protocol the client asks to switch to (Upgrade), if any.
        self.upgrade = upgrade
        #: A 101 turned the exchange into a byte tunnel between the two connections.
        self.tunnel = False
        self.request_done = False
        self.abandoned = False
        self.upstream: UpstreamConnection | None = None
        self.route: Route | InternalRoute | None = None
        self.server: Server | None = None
        #: Servers already tried, once a resend is considered.
        self._tried: list[Server] | None = None
        self._attempts_left = 0
        #: The framed request body so far, kept for a resend; None until a body arrives.
        self._replay: list[bytes] | None = None
        #: Its size; -1 once the body outgrew the buffer and cannot be resent.
        self._replay_size = 0
        self._interim_sent = False
        self._continued = False  # a 100 (Continue) was relayed
        self._head = b""
        #: Request body held until the backend connection is ready; None: nothing held
        #: (most requests have no body to hold, and save making a list).
        self._pending: list[bytes] | None = None
        self._pending_size = 0
        #: The final (non-1xx) response head has arrived.
        self.final_seen = False
        self.response_started = False
        self._response_done = False
        self._out_chunked = False
        self._no_body = False
        self._close_delimited = False
        self._discard_body = False
        self._timer: asyncio.TimerHandle | None = None
        self._path: str | None = None
        self._query = ""
        #: The status sent to the client; 0 until a response starts.
        self.status = 0
        self.started = clock()

    # -- RequestView, for the rules ----------------------------------------

    @property
    def host(self) -> str:
        """The Host routed by: lower-case, without port or IPv6 brackets.

        Computed when asked (a rule with a predicate, the access log): the route
        table is keyed by the Host header's bytes, so most requests never need it.
        """
        return normalize_host(self.raw_host)

    @property
    def path(self) -> str:
        if self._path is None:
            path, _, query = self.target.partition(b"?")
            if not path.startswith(b"/"):
                # absolute-form (RFC 9112 §3.2.2): scheme://authority/path
                scheme_end = path.find(b"://")
                slash = path.find(b"/", scheme_end + 3) if scheme_end >= 0 else -1
                path = path[slash:] if slash >= 0 else b"/"
            self._path = path.decode("latin-1")
            self._query = query.decode("latin-1")
        return self._path

    @property
    def query(self) -> str:
        self.path  # noqa: B018 - fills _query
        return self._query

    @property
    def client_ip(self) -> str:
        return self.client.client_ip

    @property
    def method(self) -> str:
        return self.raw_method.decode("latin-1")

    def header_values(self, name: str) -> list[str]:
        wanted = name.encode("latin-1")
        if wanted == b"host":  # kept apart from the other fields
            return [self.raw_host.decode("latin-1")] if self.raw_host else []
        fields = self.fields
        return [
            fields[i + 2].decode("latin-1")
            for i in range(0, len(fields), 4)
            if fields[i].lower() == wanted
        ]

    # -- driven by the client connection -----------------------------------

    def start(self) -> None:
        """Route the request and send it on its way. Called when it is the client's turn."""
        client = self.client
        internal = client.entry_point.internal
        if internal is not None and internal.serve(self):
            return
        route = client.entry_point.table.lookup(self.raw_host, self)  # type: ignore[arg-type]
        if route is None:
            self._respond_error(404)
            return
        self.route = route
        server = route.service.balancer.pick()
        if server is None:
            self._respond_error(503, f"no available server for service {route.service.name}")
            return
        self._attempts_left = route.attempts - 1
        self._head = hdr.request_head(
            self.raw_method,
            self.target if self.target[:1] in (b"/", b"*") else self._origin_form(),
            self.fields,
            self.raw_host,
            client.forwarded,  # type: ignore[arg-type]
            self.incoming,
            self.request_chunked,
            self.upgrade,
        )
        self._send_to(server)

    def request_body(self, data: bytes) -> None:
        """A piece of the request body from the client."""
        if self._discard_body:
            self.client.last_active = self.client.loop.time()  # see ClientConnection.idle
            return
        parts = (b"%x\r\n" % len(data), data, hdr.CRLF) if self.request_chunked else (data,)
        self._keep_for_replay(parts, len(data))
        if self.upstream is not None:
            self.upstream.writelines(parts)
        else:
            self._hold(parts, len(data))
            if self._pending_size > _PENDING_LIMIT:
                self.client.pause_reading_for(self)

    def request_complete(self, trailers: list[bytes] | None = None) -> None:
        """The client has sent the whole request; a chunked one may end with trailer fields."""
        self.request_done = True
        if self.request_chunked and not self._discard_body:
            last = b"0\r\n%s\r\n" % b"".join(trailers) if trailers else _LAST_CHUNK
            self._keep_for_replay((last,), 0)
            if self.upstream is not None:
                self.upstream.write(last)
            else:
                self._hold((last,), 0)
        if self._response_done:
            self.client.exchange_finished(self)

    def abandon(self) -> None:
        """The client went away: stop everything and free the backend connection."""
        if not self._response_done and not self.abandoned:
            self.client.runtime.stats.record(self)
        self.abandoned = True
        self._cancel_timer()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.detach()

    # -- driven by the upstream connection ----------------------------------

    def upstream_connected(self, conn: UpstreamConnection) -> None:
        """A backend connection is ready: send the request head and any held body."""
        self.upstream = conn
        conn.exchange = self
        pending = self._pending
        if pending:
            conn.writelines((self._head, *pending))
            self._pending = None
            self._pending_size = 0
            self.client.resume_reading_for(self)
        else:
            conn.write(self._head)
        client = self.client
        if client.write_paused:
            conn.pause_reading()
        timeout = client.runtime.response_header_timeout
        if timeout is not None:
            self._timer = client.loop.call_later(timeout, self._response_header_timeout)

    def upstream_write_paused(self) -> None:
        self.client.pause_reading_for(self)

    def upstream_write_resumed(self) -> None:
        self.client.resume_reading_for(self)

    def interim_response(self, status: int, fields: list[bytes]) -> None:
        """Relay a 1xx response (e.g. 100 Continue); HTTP/1.0 clients do not get one."""
        if not self.http10 and not self.abandoned:
            head = hdr.response_head(status, fields, False, b"")
            self.client.write(head)
            self._interim_sent = True  # a response byte reached the client: no resend
            if status == 100:
                self._continued = True

    def response_headers(
        self, status: int, fields: list[bytes], content_length: bool, chunked: bool
    ) -> None:
        """The final response head: decide its framing towards the client and send it.

        `fields` are the backend's end-to-end fields, Content-Length
        included; `chunked` says the backend used chunked framing.
        """
        self.final_seen = True
        if self._timer is not None:
            self._cancel_timer()
        server = self.server
        assert server is not None  # set before the request was sent; narrows it for mypyc
        pool = server.pool
        if pool.failures or not pool.answered:
            pool.record_success()
        if status == 101:
            self._switch_protocols(fields)
            return
        self.status = status
        self._settle_connection()
        if self.raw_method == b"HEAD" or status == 204 or status == 304:
            # RFC 9110 §6.4.1: HEAD, 1xx, 204 and 304 responses never carry a body.
            self._no_body = True
        elif not content_length:
            self._close_delimited = not chunked
            if self.http10:
                # An HTTP/1.0 client cannot read chunked framing; the end of
                # the body is signalled by closing the connection.
                self.keep_alive = False
            else:
                self._out_chunked = True
        if not self.keep_alive:
            connection = b"Connection: close\r\n"
        elif self.http10:
            connection = b"Connection: keep-alive\r\n"
        else:
            connection = b""
        self.response_started = True
        self.client.write(hdr.response_head(status, fields, self._out_chunked, connection))

    def response_body(self, data: bytes) -> None:
        if self._no_body:
            return
        if self._out_chunked:
            self.client.writelines((b"%x\r\n" % len(data), data, hdr.CRLF))
        else:
            self.client.write(data)

    def response_complete(self, trailers: list[bytes] | None = None) -> None:
        """The backend finished the response (its connection is already released).

        A chunked response's trailer fields are relayed to a client that
        gets chunked framing; an HTTP/1.0 client cannot receive them.
        """
        self.upstream = None
        if self._out_chunked:
            self.client.write(b"0\r\n%s\r\n" % b"".join(trailers) if trailers else _LAST_CHUNK)
        self._finish_response()

    def upstream_closed(self, clean: bool) -> None:
        """The backend connection closed while this exchange used it.

        `clean` is False for a reset: then even a close-delimited body is
        truncated, not complete.
        """
        self.upstream = None
        if self.abandoned:
            return
        if self.tunnel:
            self.client.close()  # after what the backend sent last is written
            return
        if clean and self.final_seen and self._close_delimited:
            # RFC 9112 §6.3: without Content-Length or chunked framing the
            # response body ends when the server closes the connection.
            self.response_complete()
            return
        self.upstream_failed(502, "backend closed the connection", RESET)

    def upstream_failed(self, status: int, reason: str, kind: str) -> None:
        """The backend could not give a complete response.

        `kind` is CONNECT (the request never left), RESET (the connection
        failed or closed after the request was sent), TIMEOUT or INVALID.
        """
        self._cancel_timer()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.detach()
        if self.abandoned:
            return
        server = self.server
        if server is not None and (kind is CONNECT or kind is RESET):
            server.pool.record_failure(self.route.service.passive)  # type: ignore[union-attr]
        errors = self.client.runtime.stats.upstream_errors
        key = (self.route.service.name, kind)  # type: ignore[union-attr]
        errors[key] = errors.get(key, 0) + 1
        if self._may_resend(kind) and self._resend(reason):
            return
        log.warning(
            "%s %s -> %s: %s",
            self.method,
            self.target.decode("latin-1"),
            server.url if server is not None else "-",
            reason,
        )
        if self.response_started:
            # Part of the response is already with the client; the only
            # honest signal left is to cut the connection.
            self.client.abort()
            return
        self._respond_error(status)

    # -- answers from the proxy itself, and what the access log reads -----------

    def respond(self, status: int, render: Callable[[bool, bool], bytes]) -> None:
        """Answer from the proxy itself; render(keep_alive, http10) gives the whole response."""
        self.status = status
        self._settle_connection()
        self.response_started = True
        response = render(self.keep_alive, self.http10)
        if self.raw_method == b"HEAD":
            # RFC 9110 §9.3.2: the same head, no body; a pipelining client
            # would read one as the start of the next response.
            response = response[: response.index(b"\r\n\r\n") + 4]
        self.client.write(response)
        self._finish_response()

    @property
    def response_done(self) -> bool:
        """Whether the whole response has been handed to the client connection."""
        return self._response_done

    @property
    def origin_status(self) -> int:
        """The status the backend sent; 0 when the proxy answered itself."""
        return self.status if self.final_seen else 0

    @property
    def retry_attempts(self) -> int:
        """How many times the request was resent to another server."""
        return len(self._tried) - 1 if self._tried else 0

    # -- resending (RFC 9110 §9.2.2) ---------------------------------------------

    def _send_to(self, server: Server) -> None:
        self.server = server
        conn = server.pool.acquire()
        if conn is None:
            server.pool.connect(self)
        else:
            self.upstream_connected(conn)

    def _hold(self, parts: tuple[bytes, ...], size: int) -> None:
        """Hold request body bytes until the backend connection is ready."""
        if self._pending is None:
            self._pending = list(parts)
        else:
            self._pending.extend(parts)
        self._pending_size += size

    def _keep_for_replay(self, parts: tuple[bytes, ...], size: int) -> None:
        if self._replay_size < 0:
            return
        self._replay_size += size
        if self._replay_size > self.client.runtime.replay_limit:
            self._replay = None
            self._replay_size = -1
        elif self._replay is None:
            self._replay = list(parts)
        else:
            self._replay.extend(parts)

    def _may_resend(self, kind: str) -> bool:
        """Whether resending is allowed: no response byte has reached the client, and
        either the request never left, or it is idempotent and its body is still held."""
        if self._attempts_left <= 0 or self.response_started or self._interim_sent:
            return False
        if kind is CONNECT:
            return True
        return kind is RESET and self.raw_method in IDEMPOTENT and self._replay_size >= 0

    def _resend(self, reason: str) -> bool:
        """Send the request again, to a server not tried yet; False if there is none."""
        tried = self._tried
        if tried is None:
            tried = self._tried = [self.server]  # type: ignore[list-item]
        route = self.route
        server = route.service.balancer.pick(exclude=tried)  # type: ignore[union-attr]
        if server is None:
            return False
        self._attempts_left -= 1
        tried.append(server)
        retries = self.client.runtime.stats.retries
        retries[route.service.name] = retries.get(route.service.name, 0) + 1  # type: ignore[union-attr]
        log.info(
            "%s %s: %s; resending to %s",
            self.method,
            self.target.decode("latin-1"),
            reason,
            server.url,
        )
        if self._replay is not None and not self._pending:
            # Sent already (the connection failed afterwards): send it again.
            self._pending = list(self._replay)
        delay = route.retry_interval * (2 ** (len(tried) - 2))  # type: ignore[union-attr]
        if delay > 0:
            self.client.loop.call_later(delay, self._resend_now, server)
        else:
            self._send_to(server)
        return True

    def _resend_now(self, server: Server) -> None:
        if not self.abandoned:
            self._send_to(server)

    # -- internals ------------------------------------------------------------

    def _switch_protocols(self, fields: list[bytes]) -> None:
        """A 101 (RFC 9110 §15.2.2): relay it, then relay bytes both ways.

        The UpstreamConnection switches itself when its parser reports the
        upgrade; here the client side switches.
        """
        if self.upgrade is None or self.abandoned:
            # A 101 the client did not ask for cannot be relayed.
            self.upstream_failed(502, "backend switched protocols unasked", INVALID)
            return
        self.status = 101  # counted when the tunnel ends
        self.tunnel = True
        self.response_started = True
        self.client.write(
            hdr.response_head(
                101, fields, False, b"Connection: Upgrade\r\nUpgrade: %s\r\n" % self.upgrade
            )
        )
        self.client.start_tunnel()

    def _origin_form(self) -> bytes:
        """The target to send upstream for an absolute-form request (RFC 9112 §3.2.2)."""
        query = self.query
        return self.path.encode("latin-1") + (b"?" + query.encode("latin-1") if query else b"")

    def _settle_connection(self) -> None:
        """Before a final response goes out: keep the client connection only if safe.

        A response that comes before the whole request body has arrived must
        say whether the connection goes on (RFC 9110 §10.1.1). If it does not
        say `close`, the client must send the rest (RFC 9112 §9.6), which is
        relayed and, once the response is complete, read and dropped: the
        connection stays in step. So only these close it:
        - an error status (>= 400), from the backend or the proxy: the body is
          not wanted, and `close` lets the client stop sending it;
        - a `100-continue` request not yet told to continue: its client may
          skip the body, and what comes next is then the next request or the
          body, which cannot be told apart (Go's net/http closes too).
        Any other answer keeps the connection: a backend streaming a 2xx
        while it reads (an echo, an upload processor), say.

        A worker that began draining after the request arrived says
        `Connection: close` now: this is the last moment the client can be
        told, so that it opens a new connection instead of sending its next
        request into one about to close.
        """
        if self.client.closing or (
            self.has_body
            and not self.request_done
            and (self.status >= 400 or (not self._continued and self._expects_continue()))
        ):
            self.keep_alive = False

    def _expects_continue(self) -> bool:
        """Whether the request carries `Expect: 100-continue` (RFC 9110 §10.1.1)."""
        return any(v.strip().lower() == "100-continue" for v in self.header_values("expect"))

    def _respond_error(self, status: int, detail: str | None = None) -> None:
        self.respond(
            status,
            lambda keep_alive, http10: error_response(
                status, keep_alive=keep_alive, http10=http10, detail=detail
            ),
        )

    def _finish_response(self) -> None:
        self.client.runtime.stats.record(self)
        self._response_done = True
        if self.request_done:
            self.client.exchange_finished(self)
        else:
            # The rest of the request body is read and dropped, so the
            # connection stays in step for the next request.
            self._discard_body = True
            self._pending = None
            self.client.last_active = self.client.loop.time()
            self.client.resume_reading_for(self)

    def _response_header_timeout(self) -> None:
        self._timer = None
        self.upstream_failed(504, "backend response header timeout", TIMEOUT)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
