"""Split input: requests and responses cut at arbitrary byte boundaries.

Hypothesis builds valid requests (GET, HEAD, POST with Content-Length,
POST chunked with chunk extensions and trailers, pipelined sequences of
them) and chooses where to cut the bytes, so cuts land inside request
lines, header lines, chunk-size lines and CRLFs. Each piece goes out on its
own (TCP_NODELAY and a 1 ms pause: the segmentation is what is under test)
to a real portside in front of `StrictBackend` (tests/fuzz_proxy.py), which
records what it received and echoes a digest of it. The same is done for
responses: `CannedBackend` sends a canned response in pieces chosen by
hypothesis.

Request bodies framed by Content-Length must arrive byte for byte; chunked
ones are re-framed by the proxy, so their decoded body and trailers are
compared. Responses must come back in order.

At the end: a short run of the fuzz driver, so CI exercises it, and the
reproducers of the proxy bugs it found, kept as regression tests.
"""

from __future__ import annotations

import itertools
import socket
import string
import time

import pytest
from conftest import Portside, lb_config
from fuzz_proxy import StrictBackend, echo_body, fuzz, parse_responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_backend import ThreadedBackend

PAUSE = 0.001  # between pieces, so that each is a read of its own
TIMEOUT = 10.0
SETTINGS = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_ids = itertools.count()


class CannedBackend(ThreadedBackend):
    """Answers `GET /canned/<id>` with the response registered under <id>, in pieces.

    Each piece is a send of its own (TCP_NODELAY, 1 ms apart). A response
    registered as close-delimited closes the connection after it.
    """

    def __init__(self) -> None:
        self.plans: dict[bytes, tuple[list[bytes], bool]] = {}
        self._listen()

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                target = head.split(b" ", 2)[1]
                pieces, close = self.plans.pop(target.rpartition(b"/")[2])
                try:
                    for i, piece in enumerate(pieces):
                        if i:
                            time.sleep(PAUSE)
                        conn.sendall(piece)
                except OSError:
                    return
                if close:
                    return


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    backend = StrictBackend()
    canned = CannedBackend()
    proxy = Portside(tmp_path_factory.mktemp("split"))
    proxy.start(
        lb_config(backend.url, host="split.localhost", name="split")
        + lb_config(canned.url, host="canned.localhost", name="canned")
    )
    yield proxy, backend, canned
    log = proxy.logs()  # before stopping: what serving requests logged
    proxy.stop()
    backend.stop()
    canned.stop()
    assert "Traceback" not in log


# -- strategies ---------------------------------------------------------------------

TOKEN = string.ascii_letters + string.digits + "-_.!~*"
tokens = st.text(TOKEN, min_size=1, max_size=8).map(str.encode)
values = st.text(TOKEN + " =;,/", min_size=1, max_size=20).map(str.encode).map(bytes.strip)
values = values.filter(bool)
quoted = st.text(TOKEN + " =;,/", max_size=10).map(lambda s: b'"' + s.encode() + b'"')
extensions = st.lists(
    st.tuples(tokens, st.one_of(st.just(b""), tokens.map(b"=".__add__), quoted.map(b"=".__add__))),
    max_size=2,
).map(lambda exts: b"".join(b";" + name + value for name, value in exts))
trailer_names = st.sampled_from([b"X-Sum", b"X-Checksum", b"x-trailer", b"Server-Timing"])
trailers = st.lists(st.tuples(trailer_names, values), max_size=3, unique_by=lambda t: t[0])
extra_fields = st.lists(
    st.tuples(st.sampled_from([b"X-A", b"Accept", b"User-Agent", b"X-Long"]), values),
    max_size=3,
    unique_by=lambda t: t[0],
)


@st.composite
def chunked_body(draw, body: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """`body` in chunks of hypothesis' choosing, with extensions and trailers."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=5))))
    bounds = [0, *[c for c in cuts if 0 < c < len(body)], len(body)]
    out = b""
    for start, end in itertools.pairwise(bounds):
        if end > start:
            size = b"%x" % (end - start)
            if draw(st.booleans()):
                size = size.upper()
            out += size + draw(extensions) + b"\r\n" + body[start:end] + b"\r\n"
    fields = draw(trailers)
    out += b"0" + draw(extensions) + b"\r\n"
    out += b"".join(name + b": " + value + b"\r\n" for name, value in fields) + b"\r\n"
    return out, fields


@st.composite
def requests(draw) -> dict:
    """One valid request: its bytes and what the backend must receive."""
    kind = draw(st.sampled_from(["GET", "HEAD", "content-length", "chunked"]))
    # Fixed width: hypothesis replays a case and draws the cuts again, up to the
    # request's length, which must not change when the id gains a digit.
    target = b"/split/%09d" % next(_ids)
    if draw(st.booleans()):
        target += b"?q=" + draw(tokens)
    head = b"%s %s HTTP/1.1\r\nHost: split.localhost\r\n" % (
        b"POST" if kind in ("content-length", "chunked") else kind.encode(),
        target,
    )
    fields = draw(extra_fields)
    head += b"".join(name + b": " + value + b"\r\n" for name, value in fields)
    body, tail, sent_trailers = b"", b"", []
    if kind == "content-length":
        body = draw(st.binary(max_size=400))
        head += b"Content-Length: %d\r\n" % len(body)
        tail = body
    elif kind == "chunked":
        body = draw(st.binary(min_size=0, max_size=400))
        head += b"Transfer-Encoding: chunked\r\n"
        tail, sent_trailers = draw(chunked_body(body))
    method = {"GET": b"GET", "HEAD": b"HEAD"}.get(kind, b"POST")
    return {
        "raw": head + b"\r\n" + tail,
        "method": method,
        "target": target,
        "body": body,
        "chunked": kind == "chunked",
        "fields": fields,
        "trailers": sent_trailers,
    }


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted({p for p in points if 0 < p < len(data)}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def send_in_pieces(sock: socket.socket, pieces: list[bytes]) -> None:
    for i, piece in enumerate(pieces):
        if i:
            time.sleep(PAUSE)
        sock.sendall(piece)


def read_responses(sock: socket.socket, count: int):
    """Read until `count` complete responses have arrived."""
    data = b""
    deadline = time.monotonic() + TIMEOUT
    while True:
        responses, _ = parse_responses(data, closed=False)
        if len(responses) >= count:
            return responses
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(responses)} of {count} responses: {data!r}"
        data += chunk


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def check_exchange(proxy, backend, reqs: list[dict], pieces: list[bytes]) -> None:
    with connect(proxy.port) as sock:
        send_in_pieces(sock, pieces)
        responses = read_responses(sock, len(reqs))
    assert len(responses) == len(reqs)
    for req, resp in zip(reqs, responses, strict=True):
        assert resp.status == 200
        if req["method"] == b"HEAD":
            assert resp.body == b""
        else:
            # In order, and the backend saw this request's body.
            assert resp.body == echo_body(req["method"], req["target"], req["body"])
        got = backend.by_seq(int(resp.header(b"x-seq")))
        assert (got.method, got.target) == (req["method"], req["target"])
        assert got.body == req["body"]
        assert got.chunked == req["chunked"]
        if not req["chunked"] and req["body"]:
            assert got.raw.endswith(b"\r\n\r\n" + req["body"])  # byte for byte
        assert got.trailers == req["trailers"]
        for name, value in req["fields"]:
            assert got.header(name.lower()) == [value]


# -- requests split at arbitrary boundaries --------------------------------------------


@SETTINGS
@given(req=requests(), data=st.data())
def test_one_request_split_anywhere(setup, req, data):
    proxy, backend, _ = setup
    raw = req["raw"]
    points = data.draw(st.lists(st.integers(1, len(raw) - 1), max_size=12), label="cuts")
    check_exchange(proxy, backend, [req], cut(raw, points))


@SETTINGS
@given(reqs=st.lists(requests(), min_size=2, max_size=4), data=st.data())
def test_pipelined_requests_split_anywhere(setup, reqs, data):
    proxy, backend, _ = setup
    raw = b"".join(r["raw"] for r in reqs)
    points = data.draw(st.lists(st.integers(1, len(raw) - 1), max_size=16), label="cuts")
    check_exchange(proxy, backend, reqs, cut(raw, points))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(req=requests().filter(lambda r: r["chunked"]), data=st.data())
def test_chunked_request_cut_inside_its_chunk_lines(setup, req, data):
    """Every cut inside the chunked framing: size lines, extensions, CRLFs, trailers."""
    proxy, backend, _ = setup
    raw = req["raw"]
    body_start = raw.index(b"\r\n\r\n") + 4
    points = data.draw(
        st.lists(st.integers(body_start, len(raw) - 1), min_size=1, max_size=20), label="cuts"
    )
    check_exchange(proxy, backend, [req], cut(raw, points))


def test_chunked_request_one_byte_at_a_time(setup):
    proxy, backend, _ = setup
    body = b"hello, split world"
    raw = (
        b"POST /split/bytewise HTTP/1.1\r\nHost: split.localhost\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b'5;a=b\r\nhello\r\nD;q="x;y"\r\n, split world\r\n0;end\r\nX-Sum: 42\r\n\r\n'
    )
    req = {
        "raw": raw,
        "method": b"POST",
        "target": b"/split/bytewise",
        "body": body,
        "chunked": True,
        "fields": [],
        "trailers": [(b"X-Sum", b"42")],
    }
    check_exchange(proxy, backend, [req], [raw[i : i + 1] for i in range(len(raw))])


# -- responses split at arbitrary boundaries -------------------------------------------


@st.composite
def canned_responses(draw) -> dict:
    kind = draw(st.sampled_from(["content-length", "chunked", "close-delimited"]))
    status = draw(st.sampled_from([200, 201, 203, 404, 500]))
    body = draw(st.binary(max_size=600))
    head = b"HTTP/1.1 %d Whatever\r\nX-R: %s\r\n" % (status, draw(values))
    sent_trailers: list[tuple[bytes, bytes]] = []
    if kind == "content-length":
        raw = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    elif kind == "chunked":
        tail, sent_trailers = draw(chunked_body(body))
        raw = head + b"Transfer-Encoding: chunked\r\n\r\n" + tail
    else:
        if draw(st.booleans()):
            head += b"Connection: close\r\n"
        raw = head + b"\r\n" + body
    return {"raw": raw, "status": status, "body": body, "trailers": sent_trailers, "kind": kind}


@SETTINGS
@given(resp=canned_responses(), data=st.data())
def test_response_split_anywhere(setup, resp, data):
    proxy, _, canned = setup
    raw = resp["raw"]
    points = data.draw(st.lists(st.integers(1, len(raw) - 1), max_size=12), label="cuts")
    key = b"%d" % next(_ids)
    canned.plans[key] = (cut(raw, points), resp["kind"] == "close-delimited")
    with connect(proxy.port) as sock:
        sock.sendall(b"GET /canned/%s HTTP/1.1\r\nHost: canned.localhost\r\n\r\n" % key)
        (got,) = read_responses(sock, 1)
    assert got.status == resp["status"]
    assert got.body == resp["body"]
    assert got.header(b"x-r") is not None
    assert got.trailers == resp["trailers"]


# -- the fuzz driver, briefly --------------------------------------------------------------


def test_fuzz_driver_for_20_seconds():
    """The fuzz driver runs 20 s: no worker dies or restarts, and it finds nothing."""
    summary = fuzz(20, seed=20261126, threads=6, quiet=True)
    assert summary["cases"] > 100
    assert summary["bad_responses"] == []
    assert not summary["findings"], {
        k: summary[k][:3] for k in ("crashes", "hangs", "desyncs", "orphans")
    }


# -- proxy bugs the fuzzer found: minimal reproducers ---------------------------------------


def exchange_raw(port: int, *packets: bytes, gap: float = 0.1, wait: float = 3.0):
    """Send packets `gap` apart, half-close, read until close or `wait` s of silence.

    Returns (bytes received, whether the proxy closed the connection).
    """
    with connect(port) as sock:
        for i, packet in enumerate(packets):
            if i:
                time.sleep(gap)
            sock.sendall(packet)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        received = b""
        sock.settimeout(wait)
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return received, False
            except OSError:
                return received, True
            if not chunk:
                return received, True
            received += chunk


@pytest.fixture(scope="module")
def bugs(tmp_path_factory):
    """A portside of its own: some reproducers make it log tracebacks."""
    backend = StrictBackend()
    proxy = Portside(tmp_path_factory.mktemp("split-bugs"))
    proxy.start(lb_config(backend.url, host="split.localhost", name="split"))
    yield proxy, backend
    proxy.stop()
    backend.stop()


def test_fixed_upgrade_answered_by_the_proxy_stalls_the_connection(bugs):
    """
    Found by the fuzzer, now fixed: an Upgrade request the proxy answers itself
    (404/503) leaves the client socket paused (_PAUSE_UPGRADE is set after
    exchange_finished already ran): the pipelined request after it is never answered and
    a half-close is never noticed; the connection hangs until the idle timeout
    """
    proxy, _ = bugs
    received, closed = exchange_raw(
        proxy.port,
        b"GET /u1 HTTP/1.1\r\nHost: nowhere.localhost\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\n\r\n"
        b"GET /u2 HTTP/1.1\r\nHost: nowhere.localhost\r\n\r\n",
    )
    responses, _ = parse_responses(received, closed=closed)
    assert [r.status for r in responses] == [404, 404]  # actual: [404], then silence
    assert closed


def test_fixed_head_error_response_has_a_body(bugs):
    """
    Found by the fuzzer, now fixed: a 404 (or any proxy-made error) answering HEAD
    carries a body (RFC 9110 §9.3.2); a client reads it as the start of the next
    response
    """
    proxy, _ = bugs
    received, _ = exchange_raw(proxy.port, b"HEAD /h HTTP/1.1\r\nHost: nowhere.localhost\r\n\r\n")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404")
    assert body == b""  # actual: b"404 page not found\n"


def test_fixed_host_in_trailers_is_forwarded(bugs):
    """
    Found by the fuzzer, now fixed: a Host field in a chunked request's trailer section
    is forwarded to the backend as a trailer (on_header keeps Host after the head; RFC
    9110 §6.5.1 forbids it there)
    """
    proxy, backend = bugs
    received, _ = exchange_raw(
        proxy.port,
        b"POST /split/trailer-host HTTP/1.1\r\nHost: split.localhost\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\nHost: evil.example\r\n\r\n",
    )
    (response,), _ = parse_responses(received)
    # The backend received "0\r\nHost: evil.example\r\n\r\n"; its strict parser
    # refuses a framing field in trailers, closes, and the client gets a 502.
    assert not any(b"/split/trailer-host" in raw for _, _, raw in backend.desyncs)
    assert response.status in (200, 400)


def test_fixed_request_after_a_closing_response_still_reaches_the_backend(bugs):
    """
    Found by the fuzzer, now fixed: after a response that closes the connection (here a
    404 sent before the chunked request body arrived, hence Connection: close), the rest
    of the same read is still parsed and the pipelined request in it is forwarded to the
    backend (at once when a pooled backend connection is idle); its response is thrown
    away (a POST there would be executed unseen)
    """
    proxy, backend = bugs
    # A pooled backend connection makes the forwarding immediate.
    exchange_raw(proxy.port, b"GET /split/warm HTTP/1.1\r\nHost: split.localhost\r\n\r\n")
    received, closed = exchange_raw(
        proxy.port,
        b"POST /p1 HTTP/1.1\r\nHost: nowhere.localhost\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n0\r\n\r\n"
        b"GET /split/after-close HTTP/1.1\r\nHost: split.localhost\r\n\r\n",
    )
    responses, _ = parse_responses(received, closed=closed)
    time.sleep(0.3)
    reached = any(r.target == b"/split/after-close" for r in list(backend.received))
    # Either both are answered, or the second never reaches the backend.
    assert [r.status for r in responses] == [404, 200] or not reached  # actual: [404], reached


def test_fixed_parser_fed_again_after_a_rejected_pipelined_request(bugs):
    """
    Found by the fuzzer, now fixed: after a pipelined request is rejected while an
    earlier one is in flight, reading resumes when the queue drains and the next bytes
    are fed to the parser already in its error state: 'internal error while handling a
    request' + Traceback in the log, and the queued 505 becomes a 400
    """
    proxy, _ = bugs
    before = proxy.logs().count("internal error")
    received, _ = exchange_raw(
        proxy.port,
        b"GET /split/r1 HTTP/1.1\r\nHost: split.localhost\r\n\r\n"
        b"GET /split/r2/slow-resp HTTP/1.1\r\nHost: split.localhost\r\n\r\n"
        b"GET /split/r3 HTTP/2.0\r\nHost: split.localhost\r\n\r\n",
        b"GET /split/r4 HTTP/1.1\r\nHost: split.localhost\r\n\r\n",
    )
    responses, _ = parse_responses(received)
    assert [r.status for r in responses] == [200, 200, 505]  # actual: [200, 200, 400]
    assert proxy.logs().count("internal error") == before


def test_fixed_connection_naming_content_length_smuggles_the_body(bugs):
    """
    Found by the fuzzer, now fixed: request smuggling: `Connection: content-length`
    makes the proxy drop Content-Length from the head it forwards (drop_named) while it
    still forwards the body, so the backend parses the body as a request of its own
    """
    proxy, backend = bugs
    smuggled = b"GET /split/smuggled HTTP/1.1\r\nHost: split.localhost\r\n\r\n"
    exchange_raw(
        proxy.port,
        b"POST /split/carrier HTTP/1.1\r\nHost: split.localhost\r\n"
        b"Connection: content-length\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled),
    )
    time.sleep(0.3)
    # The strict backend refuses a request the proxy did not render (no X-Forwarded-*).
    assert not any(b"/split/smuggled" in raw for _, _, raw in backend.desyncs)
    assert not any(r.target == b"/split/smuggled" for r in list(backend.received))


def test_fixed_connection_naming_host_drops_host(bugs):
    """
    Found by the fuzzer, now fixed: `Connection: host` makes the proxy drop the Host
    field from the head it forwards (drop_named): the backend gets an HTTP/1.1 request
    without Host
    """
    proxy, backend = bugs
    exchange_raw(
        proxy.port,
        b"GET /split/no-host HTTP/1.1\r\nHost: split.localhost\r\nConnection: host\r\n\r\n",
    )
    time.sleep(0.3)
    assert not any(b"/split/no-host" in raw for _, _, raw in backend.desyncs)
