"""Hostile clients and broken backends: the worker answers correctly and stays up."""

from __future__ import annotations

import socket
import struct
import threading

from conftest import connect, free_port, lb_config, read_response


class ScriptedBackend:
    """A raw TCP backend that answers every connection with fixed bytes, then
    closes it, optionally with a reset (SO_LINGER 0)."""

    def __init__(self, answer: bytes, reset: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._answer, self._reset = answer, reset
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed by stop()
            with conn:
                conn.recv(65536)
                conn.sendall(self._answer)
                if self._reset:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def stop(self) -> None:
        self._sock.close()


def _service(url: str) -> str:
    return f"""
    [http.routers.raw]
    rule = "Host(`raw.localhost`)"
    service = "raw"
    [http.services.raw.loadBalancer]
    servers = [ {{ url = "{url}" }} ]
    [http.services.raw.loadBalancer.retry]
    disabled = true
    """


def test_hundreds_of_pipelined_local_answers(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    sock, f = connect(proxy.port)
    count = 600
    with sock:
        sock.sendall(
            b"GET /?sleep=0.1 HTTP/1.1\r\nHost: whoami.localhost\r\n\r\n"
            + b"GET / HTTP/1.1\r\nHost: nobody.localhost\r\n\r\n" * count
        )
        assert read_response(f).status == 200
        statuses = [read_response(f).status for _ in range(count)]
    assert statuses == [404] * count
    assert "RecursionError" not in proxy.logs()


def test_request_pipelined_after_an_upgrade_is_answered(portside, whoami):
    proxy = portside(lb_config(whoami("w1")))
    sock, f = connect(proxy.port)
    with sock:
        sock.sendall(
            b"GET /a HTTP/1.1\r\nHost: whoami.localhost\r\nConnection: Upgrade\r\n"
            b"Upgrade: foo\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: whoami.localhost\r\n\r\n"
        )
        first, second = read_response(f), read_response(f)
    assert b"GET /a HTTP/1.1" in first.body
    assert b"GET /b HTTP/1.1" in second.body


def test_reset_during_a_close_delimited_body_is_not_passed_off_as_complete(portside):
    backend = ScriptedBackend(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npartial-body", reset=True
    )
    try:
        proxy = portside(_service(backend.url))
        sock, f = connect(proxy.port)
        with sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: raw.localhost\r\n\r\n")
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except ConnectionResetError:
                pass
        # The client must not see the terminating chunk of a complete body.
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert not data.endswith(b"0\r\n\r\n")
    finally:
        backend.stop()


def test_second_response_head_from_a_backend_is_not_relayed(portside):
    backend = ScriptedBackend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!"
    )
    try:
        proxy = portside(_service(backend.url))
        sock, f = connect(proxy.port)
        with sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: raw.localhost\r\n\r\n")
            assert read_response(f).body == b"ok"
            sock.sendall(b"GET / HTTP/1.1\r\nHost: raw.localhost\r\n\r\n")
            second = read_response(f)
        assert second.status == 200 and second.body == b"ok"  # a fresh exchange, not "evil!"
    finally:
        backend.stop()
