"""The request path end to end: routing, balancing, headers, errors, HTTP/1.1 framing.

Every test runs a real portside (master, discovery, workers) in front of
real whoami backends and talks to it over loopback sockets.
"""

from __future__ import annotations

import socket

from conftest import connect, free_port, lb_config, read_response


def test_round_robin_alternates_across_workers(portside, whoami):
    w1, w2 = whoami("w1"), whoami("w2")
    # Two workers: each request is a new connection that may land on either,
    # and the alternation must still hold (shared round-robin counters).
    proxy = portside(lb_config(w1, w2), workers=2)
    names = [proxy.get("whoami.localhost").field("Name") for _ in range(10)]
    assert set(names) == {"w1", "w2"}
    assert all(a != b for a, b in zip(names, names[1:], strict=False)), names


def test_backend_sees_forwarded_headers(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    resp = proxy.get("whoami.localhost", "/path?x=1")
    assert resp.status == 200
    assert "GET /path?x=1 HTTP/1.1" in resp.text
    assert resp.field("Host") == "whoami.localhost"
    assert resp.field("X-Forwarded-For") == "127.0.0.1"
    assert resp.field("X-Forwarded-Host") == "whoami.localhost"
    assert resp.field("X-Forwarded-Proto") == "http"
    assert resp.field("X-Forwarded-Port") == str(proxy.port)
    assert resp.field("X-Forwarded-Server") == socket.gethostname()
    assert resp.field("X-Real-Ip") == "127.0.0.1"


def test_untrusted_forwarded_headers_are_replaced(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    resp = proxy.get(
        "whoami.localhost",
        headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil", "X-Real-Ip": "6.6.6.6"},
    )
    assert resp.field("X-Forwarded-For") == "127.0.0.1"
    assert resp.field("X-Forwarded-Host") == "whoami.localhost"
    assert resp.field("X-Real-Ip") == "127.0.0.1"
    assert "6.6.6.6" not in resp.text


def test_trusted_peer_forwarded_for_is_appended(portside, whoami):
    proxy = portside(
        lb_config(whoami("w1")),
        extra_static="""
        [entryPoints.web.forwardedHeaders]
        trustedIPs = ["127.0.0.0/8"]
        """,
    )
    resp = proxy.get("whoami.localhost", headers={"X-Forwarded-For": "203.0.113.9"})
    assert resp.field("X-Forwarded-For") == "203.0.113.9, 127.0.0.1"


def test_weighted_round_robin(portside, whoami):
    w1, w2 = whoami("w1"), whoami("w2")
    proxy = portside(lb_config(w1, w2, weights=[3, 1]))
    names = [proxy.get("whoami.localhost").field("Name") for _ in range(8)]
    assert names.count("w1") == 6 and names.count("w2") == 2, names


def test_unknown_host_gets_404(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    resp = proxy.get("nobody.localhost")
    assert resp.status == 404
    assert resp.headers["Content-Type"].startswith("text/plain")


def test_host_match_ignores_case_and_port(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    assert proxy.get("WhoAmI.LocalHost:8123").field("Name") == "w1"


def test_dead_backend_gets_502(portside):
    proxy = portside(lb_config(f"http://127.0.0.1:{free_port()}", host="dead.localhost"))
    resp = proxy.get("dead.localhost")
    assert resp.status == 502
    assert resp.body == b"502 Bad Gateway\n"


def test_service_without_servers_gets_503(portside):
    proxy = portside(
        """
        [http.routers.empty]
        rule = "Host(`empty.localhost`)"
        service = "empty"
        [http.services.empty.loadBalancer]
        servers = []
        """
    )
    resp = proxy.get("empty.localhost")
    assert resp.status == 503
    assert b"empty@file" in resp.body


def test_backend_timeout_gets_504(portside, whoami):
    proxy = portside(
        lb_config(whoami("w1")),
        extra_static="""
        [serversTransport.forwardingTimeouts]
        responseHeaderTimeout = "300ms"
        """,
    )
    assert proxy.get("whoami.localhost", "/?sleep=5").status == 504
    assert proxy.get("whoami.localhost", "/").status == 200


def test_priority_longer_rule_wins(portside, whoami):
    w1, w2 = whoami("w1"), whoami("w2")
    proxy = portside(
        f"""
        [http.routers.site]
        rule = "Host(`app.localhost`)"
        service = "site"
        [http.routers.api]
        rule = "Host(`app.localhost`) && PathPrefix(`/api`)"
        service = "api"
        [http.services.site.loadBalancer]
        servers = [ {{ url = "{w1.url}" }} ]
        [http.services.api.loadBalancer]
        servers = [ {{ url = "{w2.url}" }} ]
        """
    )
    assert proxy.get("app.localhost", "/api/users").field("Name") == "w2"
    assert proxy.get("app.localhost", "/about").field("Name") == "w1"


def test_malformed_request_gets_400_and_close(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    sock, f = connect(proxy.port)
    with sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: whoami.localhost\r\nBad Header\r\n\r\n")
        resp = read_response(f)
        assert resp.status == 400
        assert f.read() == b""  # closed by the proxy


def test_head_then_get_on_one_connection(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    sock, f = connect(proxy.port)
    with sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: whoami.localhost\r\n\r\n")
        head = read_response(f, head_request=True)
        assert head.status == 200 and int(head.headers["Content-Length"]) > 0
        sock.sendall(b"GET / HTTP/1.1\r\nHost: whoami.localhost\r\n\r\n")
        get = read_response(f)
        assert get.status == 200
        # The whoami body echoes the request line, one byte shorter for GET.
        assert len(get.body) == int(head.headers["Content-Length"]) - 1
        assert b"GET / HTTP/1.1" in get.body


def test_each_request_on_a_connection_gets_its_own_fields(portside, whoami):
    # The rendered fields are reused while a client repeats them: any change,
    # the Host included, must reach the backend.
    proxy = portside(lb_config(whoami("w1")))
    sock, f = connect(proxy.port)
    requests = [
        (b"whoami.localhost", b"1"),
        (b"whoami.localhost", b"1"),
        (b"WHOAMI.localhost:81", b"1"),
        (b"WHOAMI.localhost:81", b"2"),
    ]
    with sock:
        for host, value in requests:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nX-A: %s\r\n\r\n" % (host, value))
            resp = read_response(f)
            assert resp.status == 200
            assert resp.field("Host") == host.decode()
            assert resp.field("X-Forwarded-Host") == host.decode()
            assert resp.field("X-A") == value.decode()
            assert _host_lines(resp) == [f"Host: {host.decode()}"]


def _host_lines(resp) -> list[str]:
    """The Host lines of the request head a whoami body echoes."""
    return [line for line in resp.text.splitlines() if line.lower().startswith("host:")]


def test_http10_request_without_host_is_sent_with_an_empty_one(portside, whoami):
    # The backend is spoken to in HTTP/1.1, which requires a Host (RFC 9112 §3.2).
    proxy = portside(lb_config(whoami("w1"), rule="PathPrefix(`/`)"))
    sock, f = connect(proxy.port)
    with sock:
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        resp = read_response(f)
    assert resp.status == 200
    assert "GET /old HTTP/1.1" in resp.text
    assert [line.rstrip() for line in _host_lines(resp)] == ["Host:"]


def test_pipelined_requests_answered_in_order(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    sock, f = connect(proxy.port)
    with sock:
        sock.sendall(
            b"GET /first?sleep=0.3 HTTP/1.1\r\nHost: whoami.localhost\r\n\r\n"
            b"GET /second HTTP/1.1\r\nHost: whoami.localhost\r\n\r\n"
            b"GET /third HTTP/1.1\r\nHost: nobody.localhost\r\n\r\n"
        )
        first, second, third = (read_response(f) for _ in range(3))
    assert b"GET /first?sleep=0.3" in first.body
    assert b"GET /second" in second.body
    assert third.status == 404


def test_http10_client_gets_identity_body_and_close(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    sock, f = connect(proxy.port)
    with sock:
        # /data?chunked=1 makes the backend answer chunked; an HTTP/1.0
        # client must get the plain body, delimited by the close.
        sock.sendall(b"GET /data?size=70000&chunked=1 HTTP/1.0\r\nHost: whoami.localhost\r\n\r\n")
        data = f.read()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert len(body) == 70000


def test_http10_keep_alive(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    sock, f = connect(proxy.port)
    with sock:
        for _ in range(2):
            sock.sendall(
                b"GET / HTTP/1.0\r\nHost: whoami.localhost\r\nConnection: keep-alive\r\n\r\n"
            )
            resp = read_response(f)
            assert resp.status == 200
            assert resp.headers["Connection"].lower() == "keep-alive"


def test_http10_keep_alive_asked_with_proxy_connection(portside, whoami):
    # llhttp honours Proxy-Connection: keep-alive from an HTTP/1.0 client too;
    # the response must still be framed for HTTP/1.0 (no chunked coding).
    proxy = portside(lb_config(whoami("w1")))
    sock, f = connect(proxy.port)
    with sock:
        sock.sendall(
            b"GET /data?size=100&chunked=1 HTTP/1.0\r\nHost: whoami.localhost\r\n"
            b"Proxy-Connection: keep-alive\r\n\r\n"
        )
        data = f.read()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert len(body) == 100


def test_chunked_request_body_is_relayed(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    sock, f = connect(proxy.port)
    with sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: whoami.localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        resp = read_response(f)
    assert resp.status == 200
    assert resp.body.endswith(b"hello world")


def test_no_body_statuses(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    sock, f = connect(proxy.port)
    with sock:
        for status in (204, 304):
            sock.sendall(b"GET /?status=%d HTTP/1.1\r\nHost: whoami.localhost\r\n\r\n" % status)
            resp = read_response(f)
            assert resp.status == status and resp.body == b""
        sock.sendall(b"GET / HTTP/1.1\r\nHost: whoami.localhost\r\n\r\n")
        assert read_response(f).status == 200


def test_expect_100_continue_is_relayed(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    sock, f = connect(proxy.port)
    with sock:
        sock.sendall(
            b"PUT / HTTP/1.1\r\nHost: whoami.localhost\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = read_response(f)
        assert interim.status == 100
        sock.sendall(b"hello")
        resp = read_response(f)
    assert resp.status == 200 and resp.body.endswith(b"hello")
