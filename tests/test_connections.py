"""Keep-alive on both sides: idle timeouts, pooled backend connections, closing rules."""

from __future__ import annotations

import psutil
from conftest import Whoami, connect, lb_config, read_response, wait_until


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
