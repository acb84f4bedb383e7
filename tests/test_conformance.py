"""HTTP/1.1 conformance, one table: raw bytes in, status and connection fate out.

Each case sends raw bytes over a real socket to a running portside in front
of a recording backend, then asserts three things:

- the status of the (final) response, or None for a connection the proxy
  had to cut because a response was already under way;
- whether the request reached the backend (smuggling and limit cases must
  not);
- whether the client connection was kept for another request.

`{p}` in a case is replaced by a path unique to the case, so the backend's
record says which case reached it.
"""

from __future__ import annotations

import select
import socket
import textwrap
import time

import pytest
from conftest import Portside, lb_config, read_response, wait_until
from raw_backend import RawBackend

HOST = b"conf.localhost"
LIMITS = """
[entryPoints.web.limits]
maxUriBytes = 1024
maxHeaderBytes = 4096
maxHeaderFields = 20
maxBodyBytes = 1000
[entryPoints.web.transport.respondingTimeouts]
readHeaderTimeout = "2s"
"""


def get(extra: bytes = b"", version: bytes = b"1.1", method: bytes = b"GET") -> bytes:
    return method + b" {p} HTTP/" + version + b"\r\nHost: conf.localhost\r\n" + extra + b"\r\n"


def post(extra: bytes, body: bytes) -> bytes:
    return b"POST {p} HTTP/1.1\r\nHost: conf.localhost\r\n" + extra + b"\r\n" + body


CHUNKED = b"Transfer-Encoding: chunked\r\n"

# (id, raw request, status, reached the backend, connection kept)
CASES = [
    # -- valid framing -----------------------------------------------------------
    ("get", get(), 200, True, True),
    ("head", get(method=b"HEAD"), 200, True, True),
    ("delete", get(method=b"DELETE"), 200, True, True),
    ("options", get(method=b"OPTIONS"), 200, True, True),
    (
        "put-cl",
        b"PUT {p} HTTP/1.1\r\nHost: conf.localhost\r\nContent-Length: 3\r\n\r\nabc",
        200,
        True,
        True,
    ),
    ("post-cl", post(b"Content-Length: 5\r\n", b"hello"), 200, True, True),
    ("post-cl-zero", post(b"Content-Length: 0\r\n", b""), 200, True, True),
    ("post-chunked", post(CHUNKED, b"5\r\nhello\r\n0\r\n\r\n"), 200, True, True),
    ("chunked-upper-case", post(b"Transfer-Encoding: Chunked\r\n", b"0\r\n\r\n"), 200, True, True),
    ("chunked-ext", post(CHUNKED, b"5;name=v\r\nhello\r\n0\r\n\r\n"), 200, True, True),
    ("chunked-trailers", post(CHUNKED, b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n"), 200, True, True),
    ("chunked-empty", post(CHUNKED, b"0\r\n\r\n"), 200, True, True),
    ("chunked-hex-upper", post(CHUNKED, b"A\r\n0123456789\r\n0\r\n\r\n"), 200, True, True),
    ("get-with-body", get(b"Content-Length: 4\r\n") + b"body", 200, True, True),
    ("http10", get(version=b"1.0"), 200, True, False),
    ("http10-keep-alive", get(b"Connection: keep-alive\r\n", version=b"1.0"), 200, True, True),
    ("http10-no-host", b"GET {p} HTTP/1.0\r\n\r\n", 404, False, False),
    ("connection-close", get(b"Connection: close\r\n"), 200, True, False),
    ("connection-upper", get(b"Connection: CLOSE\r\n"), 200, True, False),
    ("host-with-port", b"GET {p} HTTP/1.1\r\nHost: conf.localhost:80\r\n\r\n", 200, True, True),
    ("host-upper-case", b"GET {p} HTTP/1.1\r\nHost: CONF.LOCALHOST\r\n\r\n", 200, True, True),
    (
        "absolute-form",
        b"GET http://conf.localhost{p} HTTP/1.1\r\nHost: conf.localhost\r\n\r\n",
        200,
        True,
        True,
    ),
    (
        "absolute-form-port",
        b"GET http://conf.localhost:80{p} HTTP/1.1\r\nHost: conf.localhost\r\n\r\n",
        200,
        True,
        True,
    ),
    ("query", b"GET {p}?a=1&b=2 HTTP/1.1\r\nHost: conf.localhost\r\n\r\n", 200, True, True),
    (
        "expect-continue",
        post(b"Expect: 100-continue\r\nContent-Length: 2\r\n", b"hi"),
        200,
        True,
        True,
    ),
    ("long-header-ok", get(b"X-Long: " + b"a" * 2000 + b"\r\n"), 200, True, True),
    # Longer than the bits of the special-name length mask (headers.py).
    ("long-field-name-ok", get(b"X-" + b"n" * 100 + b": v\r\n"), 200, True, True),
    ("many-headers-ok", get(b"".join(b"X-%d: v\r\n" % i for i in range(18))), 200, True, True),
    ("body-at-limit", post(b"Content-Length: 1000\r\n", b"x" * 1000), 200, True, True),
    ("unknown-host", b"GET {p} HTTP/1.1\r\nHost: nowhere.localhost\r\n\r\n", 404, False, True),
    ("hop-by-hop-named", get(b"Connection: X-Secret\r\nX-Secret: 1\r\n"), 200, True, True),
    ("empty-header-value", get(b"X-Empty:\r\n"), 200, True, True),
    ("ows-around-value", get(b"X-Ows:   v   \r\n"), 200, True, True),
    # -- smuggling: 400, closed, never reaches the backend -----------------------
    ("cl-and-te", post(b"Content-Length: 5\r\n" + CHUNKED, b"0\r\n\r\n"), 400, False, False),
    ("te-and-cl", post(CHUNKED + b"Content-Length: 5\r\n", b"0\r\n\r\n"), 400, False, False),
    (
        "two-cl-different",
        post(b"Content-Length: 1\r\nContent-Length: 2\r\n", b"ab"),
        400,
        False,
        False,
    ),
    ("two-cl-same", post(b"Content-Length: 2\r\nContent-Length: 2\r\n", b"ab"), 400, False, False),
    ("cl-list", post(b"Content-Length: 2, 2\r\n", b"ab"), 400, False, False),
    ("cl-not-a-number", post(b"Content-Length: abc\r\n", b""), 400, False, False),
    ("cl-negative", post(b"Content-Length: -1\r\n", b""), 400, False, False),
    ("cl-plus", post(b"Content-Length: +2\r\n", b"ab"), 400, False, False),
    ("cl-hex", post(b"Content-Length: 0x2\r\n", b"ab"), 400, False, False),
    ("te-gzip", post(b"Transfer-Encoding: gzip\r\n", b""), 400, False, False),
    ("te-identity", post(b"Transfer-Encoding: identity\r\n", b""), 400, False, False),
    (
        "te-gzip-chunked",
        post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
        400,
        False,
        False,
    ),
    (
        "te-chunked-gzip",
        post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"),
        400,
        False,
        False,
    ),
    ("te-twice", post(CHUNKED + CHUNKED, b"0\r\n\r\n"), 400, False, False),
    ("te-xchunked", post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), 400, False, False),
    (
        "te-space-before-colon",
        post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
        400,
        False,
        False,
    ),
    ("te-obs-fold", post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"), 400, False, False),
    ("obs-fold", get(b"X-A: 1\r\n 2\r\n"), 400, False, False),
    ("obs-fold-tab", get(b"X-A: 1\r\n\t2\r\n"), 400, False, False),
    ("space-before-colon", get(b"X-A : 1\r\n"), 400, False, False),
    ("bare-cr-in-value", get(b"X-A: 1\r2\r\n"), 400, False, False),
    ("bare-lf-line-end", b"GET {p} HTTP/1.1\nHost: conf.localhost\n\n", 400, False, False),
    ("nul-in-value", get(b"X-A: 1\x002\r\n"), 400, False, False),
    ("nul-in-name", get(b"X-\x00A: 1\r\n"), 400, False, False),
    ("no-colon", get(b"X-A\r\n"), 400, False, False),
    ("empty-name", get(b": value\r\n"), 400, False, False),
    ("bad-name-char", get(b"X(A): 1\r\n"), 400, False, False),
    ("missing-host", b"GET {p} HTTP/1.1\r\n\r\n", 400, False, False),
    (
        "two-hosts",
        b"GET {p} HTTP/1.1\r\nHost: conf.localhost\r\nHost: other\r\n\r\n",
        400,
        False,
        False,
    ),
    (
        "two-hosts-same",
        b"GET {p} HTTP/1.1\r\nHost: conf.localhost\r\nHost: conf.localhost\r\n\r\n",
        400,
        False,
        False,
    ),
    (
        "absolute-form-other-host",
        b"GET http://other.localhost{p} HTTP/1.1\r\nHost: conf.localhost\r\n\r\n",
        400,
        False,
        False,
    ),
    (
        "absolute-form-bad-scheme",
        b"GET ftp://conf.localhost{p} HTTP/1.1\r\nHost: conf.localhost\r\n\r\n",
        400,
        False,
        False,
    ),
    ("chunk-size-invalid", post(CHUNKED, b"zz\r\nhello\r\n0\r\n\r\n"), 400, False, False),
    (
        "chunk-size-overflow",
        post(CHUNKED, b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        400,
        False,
        False,
    ),
    ("chunk-size-negative", post(CHUNKED, b"-5\r\nhello\r\n0\r\n\r\n"), 400, False, False),
    # The head went on before the body turned out malformed: that backend
    # connection is dropped before the request is complete, and the client
    # gets its 400.
    ("chunk-no-crlf-after-data", post(CHUNKED, b"5\r\nhelloXX0\r\n\r\n"), 400, False, False),
    ("lowercase-method", get(method=b"get"), 400, False, False),
    ("unknown-method", get(method=b"G@T"), 400, False, False),
    ("relative-target", b"GET c HTTP/1.1\r\nHost: conf.localhost\r\n\r\n", 400, False, False),
    # llhttp tolerates this; the request line is rendered anew for the backend.
    ("double-space", b"GET  {p} HTTP/1.1\r\nHost: conf.localhost\r\n\r\n", 200, True, True),
    ("http09", b"GET {p}\r\n\r\n", 400, False, False),
    ("bad-version", get(version=b"1.x"), 400, False, False),
    ("http2-version", get(version=b"2.0"), 505, False, False),
    (
        "connect",
        b"CONNECT conf.localhost:443 HTTP/1.1\r\nHost: conf.localhost:443\r\n\r\n",
        400,
        False,
        False,
    ),
    (
        "connect-origin-form",
        b"CONNECT {p} HTTP/1.1\r\nHost: conf.localhost\r\n\r\n",
        501,
        False,
        False,
    ),
    # llhttp passes an upgrade request's body on as tunnel data: refused.
    (
        "upgrade-with-body",
        get(b"Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 5\r\n") + b"hello",
        400,
        False,
        False,
    ),
    ("space-in-target", b"GET {p} x HTTP/1.1\r\nHost: conf.localhost\r\n\r\n", 400, False, False),
    # -- limits ------------------------------------------------------------------
    (
        "uri-too-long",
        b"GET {p}?" + b"a" * 2000 + b" HTTP/1.1\r\nHost: conf.localhost\r\n\r\n",
        414,
        False,
        False,
    ),
    ("header-too-large", get(b"X-Big: " + b"a" * 5000 + b"\r\n"), 431, False, False),
    ("too-many-headers", get(b"".join(b"X-%d: v\r\n" % i for i in range(30))), 431, False, False),
    ("body-over-limit-cl", post(b"Content-Length: 1001\r\n", b"x" * 1001), 413, False, False),
    (
        "body-over-limit-chunked",
        post(CHUNKED, b"3e9\r\n" + b"x" * 1001 + b"\r\n0\r\n\r\n"),
        413,
        False,
        False,
    ),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    backend = RawBackend()
    proxy = Portside(tmp_path_factory.mktemp("conformance"), extra_static=LIMITS)
    proxy.start(lb_config(backend.url, host="conf.localhost", name="conf"))
    yield proxy, backend
    proxy.stop()
    backend.stop()


@pytest.mark.parametrize(
    ("raw", "status", "reached", "kept"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_case(setup, request, raw, status, reached, kept):
    proxy, backend = setup
    marker = f"/case-{request.node.callspec.id}/".encode()  # "/" ends it: no id is a prefix
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(raw.replace(b"{p}", marker))
        got = _final_status(reader, head=raw.startswith(b"HEAD"))
        assert got == status
        assert _still_open(sock, reader) == kept
    if reached:
        wait_until(lambda: backend.saw(marker), timeout=5)
    else:
        assert not backend.saw(marker)
    assert "Traceback" not in proxy.logs()


def _final_status(reader, head: bool) -> int | None:
    """The final (non-1xx) status; None if the connection ended without a complete one."""
    try:
        while True:
            response = read_response(reader, head_request=head)
            if response.status >= 200:
                return response.status
    except (ConnectionError, ValueError, IndexError):
        return None


def _still_open(sock: socket.socket, reader) -> bool:
    """Whether the proxy answers one more request on the same connection."""
    try:
        sock.sendall(b"GET /probe HTTP/1.1\r\nHost: conf.localhost\r\n\r\n")
        return read_response(reader).status == 200
    except (ConnectionError, OSError):
        return False


def test_the_table_has_at_least_60_cases():
    assert len(CASES) >= 60


# -- cases that need more than one exchange ------------------------------------


# Hop-by-hop fields (RFC 9110 §7.6.1), mixed case, and end-to-end fields whose names
# are as long as special ones (From and Host, Referer and Upgrade): only the
# latter pass. A header callback skips names of lengths no special name has.
_HOP_BY_HOP_REQUEST = (
    b"KEEP-ALIVE: 300\r\nTe: trailers\r\nTrailer: X-Sum\r\nProxy-Connection: keep-alive\r\n"
    b"Upgrade: h2c\r\nConnection: X-Secret\r\nX-Secret: 1\r\nFrom: a@example.com\r\n"
    b"Referer: /r\r\n"
)


def test_hop_by_hop_fields_are_dropped_both_ways(setup):
    proxy, backend = setup
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(get(_HOP_BY_HOP_REQUEST).replace(b"{p}", b"/hop-in"))
        assert read_response(reader).status == 200
        sock.sendall(b"GET /resp/hop-by-hop HTTP/1.1\r\nHost: conf.localhost\r\n\r\n")
        response = read_response(reader)
    (received,) = backend.requests_for(b"/hop-in")
    sent = [line.split(b":")[0].lower() for line in received.head.split(b"\r\n")[1:] if line]
    for gone in (b"keep-alive", b"te", b"trailer", b"proxy-connection", b"upgrade", b"x-secret"):
        assert gone not in sent
    assert b"from" in sent and b"referer" in sent
    assert b"connection" not in sent  # HTTP/1.1 keep-alive upstream: nothing to say
    assert response.status == 200 and response.body == b"ok"
    for gone in ("Keep-Alive", "Connection", "X-Secret", "Proxy-Connection", "Upgrade", "Trailer"):
        assert gone not in response.headers
    assert response.headers["Expires"] == "0" and response.headers["X-Trace-Id"] == "1"


def test_trailers_reach_the_backend_and_the_client(setup):
    proxy, backend = setup
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(
            post(CHUNKED, b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n").replace(b"{p}", b"/trailer-in")
        )
        assert read_response(reader).status == 200
        sock.sendall(b"GET /resp/trailers HTTP/1.1\r\nHost: conf.localhost\r\n\r\n")
        status_line = reader.readline()
        assert b"200" in status_line
        rest = b""
        while not rest.endswith(b"0\r\nX-Checksum: abc\r\n\r\n"):
            chunk = reader.readline()
            assert chunk, rest
            rest += chunk
    (received,) = backend.requests_for(b"/trailer-in")
    assert received.body == b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n"


@pytest.mark.parametrize(
    "kind", ["cl-and-te", "two-cl", "bad-status", "status-999", "status-099", "obs-fold", "nul"]
)
def test_broken_response_framing_gets_502_and_a_new_backend_connection(setup, kind):
    proxy, backend = setup
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(f"GET /resp/{kind} HTTP/1.1\r\nHost: conf.localhost\r\n\r\n".encode())
        assert read_response(reader).status == 502
    marker = f"/after-{kind}".encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"GET " + marker + b" HTTP/1.1\r\nHost: conf.localhost\r\n\r\n")
        assert read_response(reader).status == 200
    (broken,) = backend.requests_for(f"/resp/{kind}".encode())
    (after,) = backend.requests_for(marker)
    assert after.connection != broken.connection  # the broken connection was not reused


def test_broken_chunk_mid_response_cuts_the_client_connection(setup):
    proxy, _ = setup
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"GET /resp/bad-chunk HTTP/1.1\r\nHost: conf.localhost\r\n\r\n")
        assert _final_status(reader, head=False) is None  # head relayed, then cut


def test_close_delimited_response(setup):
    proxy, _ = setup
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"GET /resp/close-delimited HTTP/1.1\r\nHost: conf.localhost\r\n\r\n")
        response = read_response(reader)
        assert (response.status, response.body) == (200, b"until the end")


def test_pipelined_requests_in_one_packet_are_answered_in_order(setup):
    proxy, backend = setup
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(
            b"".join(b"GET /pipe-%d HTTP/1.1\r\nHost: conf.localhost\r\n\r\n" % i for i in range(5))
            + b"HEAD /pipe-head HTTP/1.1\r\nHost: conf.localhost\r\n\r\n"
            + b"GET /pipe-last HTTP/1.1\r\nHost: conf.localhost\r\n\r\n"
        )
        statuses = [read_response(reader).status for _ in range(5)]
        statuses.append(read_response(reader, head_request=True).status)
        last = read_response(reader)
        assert statuses + [last.status] == [200] * 7 and last.body == b"ok"
    order = [r.target for r in backend.received if r.target.startswith(b"/pipe-")]
    assert order == [b"/pipe-%d" % i for i in range(5)] + [b"/pipe-head", b"/pipe-last"]


def test_half_closed_client_gets_its_whole_response(setup):
    proxy, _ = setup
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET /half-close HTTP/1.1\r\nHost: conf.localhost\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        response = read_response(sock.makefile("rb"))
        assert (response.status, response.body) == (200, b"ok")


def test_slowloris_gets_408_and_is_closed(setup):
    proxy, backend = setup
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: conf.localhost\r\n")
        started = time.monotonic()
        for _ in range(10):  # a header line now and then, never the end of the head
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
            if _readable(sock, 0.5):
                break
        response = read_response(reader)
        assert response.status == 408
        assert reader.read() == b""  # closed
    assert time.monotonic() - started < 5  # readHeaderTimeout is 2 s, swept each second
    assert not backend.saw(b"/slow")


def _readable(sock: socket.socket, timeout: float) -> bool:
    import select

    return bool(select.select([sock], [], [], timeout)[0])


def test_limits_are_configurable_and_validated(tmp_path):
    from portside.master.errors import ConfigError
    from portside.master.static_config import parse_static

    config = textwrap.dedent(
        """
        [entryPoints.web]
        address = ":80"
        [entryPoints.web.limits]
        maxBodyBytes = "2MiB"
        maxHeaderFields = 0
        """
    )
    import tomllib

    with pytest.raises(ConfigError) as info:
        parse_static(tomllib.loads(config), "static.toml")
    assert info.value.problems == [
        "static.toml: entryPoints.web.limits.maxHeaderFields: must be greater than 0"
    ]


def test_max_connections_leaves_new_ones_in_the_backlog(portside, whoami):
    """Past maxConnections the worker stops accepting; the kernel queues; nothing breaks."""
    proxy = portside(
        lb_config(whoami("w"), host="w.localhost", name="w"),
        extra_static="[entryPoints.web.limits]\nmaxConnections = 3\n",
    )
    held = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(3)]
    wait_until(lambda: "maxConnections reached" in proxy.logs())
    waiting = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)  # in the backlog
    waiting.sendall(b"GET /queued HTTP/1.1\r\nHost: w.localhost\r\n\r\n")
    assert not _readable(waiting, 1.0)  # not accepted, so not answered
    held.pop().close()
    response = read_response(waiting.makefile("rb"))
    assert response.status == 200 and "GET /queued" in response.text
    for sock in [*held, waiting]:
        sock.close()
    assert "Traceback" not in proxy.logs()


def test_bad_request_after_a_close_delimited_response_is_not_appended_to_it(setup):
    """Found by the fuzzer: an HTTP/1.0 response ends by closing, so nothing may follow it."""
    proxy, _ = setup
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(
            b"GET /resp/close-delimited HTTP/1.0\r\nHost: conf.localhost\r\n\r\n"
            b"GET /bad HTTP/1.1\r\nHost: conf.localhost\r\nHost: other\r\n\r\n"
        )
        response = read_response(sock.makefile("rb"))
    assert (response.status, response.body) == (200, b"until the end")


def test_a_client_still_sending_a_refused_body_reads_the_whole_answer(setup):
    """Lingering close: a 413 sent while the client is still uploading is not lost.

    Had portside closed its socket at once, the body arriving after the close would
    make the kernel answer with a reset, failing the client's sends and discarding
    the 413 it had not read yet. Instead portside shuts only its sending side and
    drops the rest of the body.
    """
    proxy, _ = setup
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    with sock:
        sock.sendall(post(b"Content-Length: 4000000\r\n", b"").replace(b"{p}", b"/upload"))
        # The 413 has arrived (unread) before any of the body is sent.
        wait_until(lambda: select.select([sock], [], [], 0)[0])
        sock.sendall(b"x" * 4_000_000)
        response = read_response(sock.makefile("rb"))
        assert response.status == 413
        assert response.headers["Connection"] == "close"
        assert sock.recv(1) == b""  # then a clean end: FIN, not a reset
