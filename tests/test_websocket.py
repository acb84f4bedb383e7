"""WebSocket through portside: a real client and server (the `websockets` package).

The proxy relays the Upgrade handshake, then the 101 turns the connection
into a byte tunnel in both directions, with back-pressure, an idle timeout,
and a close on either side closing the other.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import psutil
import pytest
from conftest import Portside, lb_config, read_response
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

BIG = 10 * 1024 * 1024


class EchoServer:
    """A WebSocket server in a thread: echoes every message; `/close` closes at once."""

    def __init__(self) -> None:
        self.headers: list[Headers] = []
        self.closed = threading.Event()
        self._server = serve(self._handle, "127.0.0.1", 0, max_size=2 * BIG)
        self.port = self._server.socket.getsockname()[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _handle(self, ws: ServerConnection) -> None:
        self.headers.append(ws.request.headers)
        try:
            if ws.request.path == "/close":
                ws.close()
                return
            for message in ws:
                ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def stop(self) -> None:
        self._server.shutdown()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


def _proxy(portside, echo: EchoServer, tunnel_idle: str = "300s") -> Portside:
    return portside(
        lb_config(f"http://127.0.0.1:{echo.port}", host="ws.localhost", name="ws"),
        extra_static=f"""
        [entryPoints.web.transport.respondingTimeouts]
        tunnelIdleTimeout = "{tunnel_idle}"
        """,
    )


def _connect(proxy: Portside, path: str = "/"):
    # The URI gives the Host header; the socket goes to the proxy on loopback.
    return connect(
        f"ws://ws.localhost:{proxy.port}{path}",
        sock=socket.create_connection(("127.0.0.1", proxy.port)),
        max_size=2 * BIG,
        open_timeout=10,
    )


def test_big_messages_both_ways_and_many_small_ones(portside, echo):
    proxy = _proxy(portside, echo)
    payload = os.urandom(BIG)
    with _connect(proxy) as ws:
        ws.send(payload)
        assert ws.recv(timeout=30) == payload
        for i in range(1000):
            ws.send(f"message {i}")
        assert [ws.recv(timeout=10) for _ in range(1000)] == [f"message {i}" for i in range(1000)]
        text = "é" * (BIG // 2)
        ws.send(text)
        assert ws.recv(timeout=30) == text
    assert echo.headers[0]["X-Forwarded-Proto"] == "ws"
    assert echo.headers[0]["Host"] == f"ws.localhost:{proxy.port}"
    assert "Traceback" not in proxy.logs()


def test_client_close_closes_the_server_side(portside, echo):
    proxy = _proxy(portside, echo)
    with _connect(proxy) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.close()
        assert echo.closed.wait(10)


def test_server_close_closes_the_client_side(portside, echo):
    proxy = _proxy(portside, echo)
    with _connect(proxy, "/close") as ws, pytest.raises(ConnectionClosed):
        ws.recv(timeout=10)


def test_idle_tunnel_is_closed(portside, echo):
    proxy = _proxy(portside, echo, tunnel_idle="1s")
    with _connect(proxy) as ws:
        ws.send("still here")
        assert ws.recv(timeout=10) == "still here"
        # Nothing flows: the sweep closes the tunnel after tunnelIdleTimeout.
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert echo.closed.wait(10)


def test_declined_upgrade_then_pipelined_request(portside, whoami):
    """A backend that answers an Upgrade request without 101: the next request is read as one."""
    backend = whoami("plain")
    proxy = portside(lb_config(backend.url, host="w.localhost", name="w"))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(
            b"GET /first HTTP/1.1\r\nHost: w.localhost\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n"
            b"GET /second HTTP/1.1\r\nHost: w.localhost\r\n\r\n"
        )
        first, second = read_response(reader), read_response(reader)
    assert (first.status, second.status) == (200, 200)
    assert "GET /first" in first.text and "GET /second" in second.text


def test_slow_reader_applies_back_pressure(portside, echo):
    """A client that sends but never reads: the pressure reaches it, and memory stays bounded.

    The echo server's replies back up to the proxy, which stops reading the
    server, whose replies then block, so it stops reading the proxy, which
    stops reading the client: the client's send blocks.
    """
    proxy = _proxy(portside, echo)
    (worker,) = proxy.worker_pids()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: ws.localhost\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        assert read_response(sock.makefile("rb"), head_request=True).status == 101
        rss_before = psutil.Process(worker).memory_info().rss
        # Binary frames of 1 MiB, masked with a zero key (RFC 6455 §5.3) so the
        # payload goes as it is.
        frame = b"\x82\xff" + (1 << 20).to_bytes(8, "big") + b"\0\0\0\0" + os.urandom(1 << 20)
        sock.settimeout(3)
        sent = 0
        with pytest.raises(TimeoutError):
            for _ in range(256):
                sock.sendall(frame)
                sent += 1
        growth = psutil.Process(worker).memory_info().rss - rss_before
    assert sent < 128, "nothing pushed back on the sender"
    assert growth < 16 << 20, f"worker grew by {growth >> 20} MiB with {sent} MiB sent"
