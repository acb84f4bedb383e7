"""Keep-alive on both sides: idle timeouts, pooled backend connections, closing rules."""

from __future__ import annotations

import socket
import time

import psutil
import pytest
from conftest import Whoami, connect, lb_config, read_response, wait_until
from raw_backend import RawBackend


def _established_to(backend: Whoami) -> int:
    """Connections the backend process has accepted and still holds."""
    conns = psutil.Process(backend.proc.pid).net_connections("tcp")
    return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED)


def test_idle_client_connection_is_closed_after_idle_timeout(portside, whoami):
    proxy = portside(
        lb_config(whoami("w1")),
        extra_static="""
        [entryPoints.web.transport.respondingTimeouts]
        idleTimeout = "1s"
        """,
    )
    sock, f = connect(proxy.port)
    with sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: whoami.localhost\r\n\r\n")
        assert read_response(f).status == 200
        sock.settimeout(10)
        assert f.read() == b""  # the proxy closed the idle connection


def test_backend_connection_is_reused_then_closed_after_idle_timeout(portside, whoami):
    backend = whoami("w1")
    proxy = portside(
        lb_config(backend),
        extra_static="""
        [serversTransport.forwardingTimeouts]
        idleConnTimeout = "1s"
        """,
    )
    for _ in range(5):
        assert proxy.get("whoami.localhost").status == 200
    assert _established_to(backend) == 1  # five requests, one pooled connection
    wait_until(lambda: _established_to(backend) == 0, timeout=10)
    assert proxy.get("whoami.localhost").status == 200


def test_backend_restart_between_requests_is_not_an_error(portside, whoami):
    backend = whoami("w1")
    proxy = portside(lb_config(backend))
    assert proxy.get("whoami.localhost").status == 200
    # The pooled connection dies with the backend; a new backend takes the port.
    backend.stop()
    replacement = Whoami("w1-again", port=backend.port)
    try:
        resp = proxy.get("whoami.localhost")
        assert resp.status == 200 and resp.field("Name") == "w1-again"
    finally:
        replacement.stop()


def test_error_before_the_body_closes_the_connection(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    sock, f = connect(proxy.port)
    with sock:
        # The client waits for 100 Continue before sending its body; a 404
        # comes instead, so the framing of this connection is unknown.
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: nobody.localhost\r\nContent-Length: 100\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        resp = read_response(f)
        assert resp.status == 404
        assert resp.headers["Connection"] == "close"


@pytest.mark.parametrize(("status", "keeps"), [(200, True), (500, False)])
def test_answer_before_the_body_ends(portside, whoami, status, keeps):
    # whoami streams its echo from the moment the head arrives, so its
    # answer starts before the client has sent the body. The client must
    # still send the rest (RFC 9112 §9.6), so a 2xx keeps the connection;
    # an error says close, so that the client may stop sending.
    proxy = portside(lb_config(whoami("w1")))
    sock, f = connect(proxy.port)
    with sock:
        sock.sendall(
            b"POST /?status=%d HTTP/1.1\r\nHost: whoami.localhost\r\n"
            b"Content-Length: 10\r\n\r\nhello" % status
        )
        wait_until(lambda: b"\r\n\r\n" in sock.recv(65536, socket.MSG_PEEK), timeout=10)
        sock.sendall(b"world")
        resp = read_response(f)
        assert resp.status == status and resp.body.endswith(b"helloworld")
        assert ("Connection" not in resp.headers) is keeps
        if keeps:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: whoami.localhost\r\n\r\n")
            assert read_response(f).status == 200
        else:
            assert f.read() == b""


@pytest.fixture
def raw_backend():
    """A RawBackend (tests/raw_backend.py): `/early` targets are answered before the body."""
    backend = RawBackend()
    yield backend
    backend.stop()


def test_expect_continue_answered_without_a_100_closes_the_connection(portside, raw_backend):
    # The backend answers 200 at once, without 100 Continue: the client may
    # now skip its body, and what it sends next could be the body or the next
    # request, so the connection cannot go on.
    proxy = portside(lb_config(raw_backend.url))
    sock, f = connect(proxy.port)
    with sock:
        sock.sendall(
            b"POST /early HTTP/1.1\r\nHost: whoami.localhost\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        resp = read_response(f)
        assert resp.status == 200 and resp.body == b"ok"
        assert resp.headers["Connection"] == "close"


def test_client_that_stops_sending_after_an_early_answer_is_closed_when_idle(portside, raw_backend):
    # The backend answers at once, before the body. The connection stays open for
    # the rest of the body, but a client that never sends it is closed after
    # idleTimeout, as an idle connection would be.
    proxy = portside(
        lb_config(raw_backend.url),
        extra_static="""
        [entryPoints.web.transport.respondingTimeouts]
        idleTimeout = "1s"
        """,
    )
    sock, f = connect(proxy.port)
    with sock:
        sock.sendall(
            b"POST /early HTTP/1.1\r\nHost: whoami.localhost\r\nContent-Length: 100\r\n"
            b"\r\nten bytes."
        )
        resp = read_response(f)
        answered = time.monotonic()
        assert resp.status == 200 and "Connection" not in resp.headers
        assert f.read() == b""  # closed by the proxy, well within the 10 s socket timeout
        # Not closed with the answer: kept for the rest of the body until idleTimeout
        # (a lower bound, which a slow machine cannot break).
        assert time.monotonic() - answered >= 0.8


def test_backend_that_never_accepts_gets_504_after_the_dial_timeout(portside):
    # A listener whose accept queue is full: the kernel drops further SYNs, so
    # a connect hangs as it would to a host that is down.
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the queue
            proxy = portside(
                lb_config(f"http://127.0.0.1:{port}"),
                extra_static='[serversTransport.forwardingTimeouts]\ndialTimeout = "1s"\n',
            )
            # Within the client's 10 s, though connecting would hang for minutes.
            assert proxy.get("whoami.localhost").status == 504
    wait_until(lambda: f"timed out connecting to 127.0.0.1:{port}" in proxy.logs())


def test_absolute_form_target_reaches_backend_in_origin_form(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    sock, f = connect(proxy.port)
    with sock:
        sock.sendall(
            b"GET http://whoami.localhost/some/path?q=1 HTTP/1.1\r\nHost: whoami.localhost\r\n\r\n"
        )
        resp = read_response(f)
    assert resp.status == 200
    assert b"GET /some/path?q=1 HTTP/1.1" in resp.body
