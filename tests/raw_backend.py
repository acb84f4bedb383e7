"""A backend that records the exact bytes of every request it receives.

It parses just enough HTTP/1.1 to find where each request ends (Content-Length
or chunked, trailers included), so tests can assert what reached it and how
it was framed. `GET /resp/<name>` answers with one of the canned, possibly
broken, responses in RESPONSES; anything else gets a small 200. A target
ending in `/early` gets it as soon as its head arrives, before the body is read
(and without a 100 Continue).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
RESPONSES = {
    "ok": OK,
    "cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    "two-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    "bad-status": b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",
    # Three digits, as llhttp wants, but no status code (RFC 9110 §15: 100 to 599).
    "status-999": b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nok",
    "status-099": b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\nContent-Length: 2\r\n\r\nok",
    "nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
    "trailers": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"
    b"0\r\nX-Checksum: abc\r\n\r\n",
    "close-delimited": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    # As nginx answers: an explicit keep-alive, where HTTP/1.1 needs none.
    "keep-alive": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
    # Hop-by-hop fields in mixed case, and end-to-end ones with names as long as
    # special ones (Expires and Trailer: 7 bytes; X-Trace-Id and Connection: 10).
    "hop-by-hop": b"HTTP/1.1 200 OK\r\nKEEP-alive: timeout=5\r\n"
    b"Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nProxy-Connection: keep-alive\r\n"
    b"Upgrade: h2c\r\nTrailer: X-Sum\r\n"
    b"Expires: 0\r\nX-Trace-Id: 1\r\nContent-Length: 2\r\n\r\nok",
}


@dataclass
class Received:
    """One request as it arrived: head and body bytes exactly as framed on the wire."""

    connection: int  # which backend connection carried it
    head: bytes
    body: bytes

    @property
    def target(self) -> bytes:
        return self.head.split(b" ", 2)[1]


class ThreadedBackend:
    """A backend on 127.0.0.1 serving each connection in a thread of its own.

    Subclasses implement `_serve(conn, number)`, `number` counting
    connections from 1; `stop()` stops accepting.
    """

    def _listen(self, backlog: int = 128) -> None:
        self._server = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self._connections += 1
                number = self._connections
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        raise NotImplementedError


@dataclass
class RawBackend(ThreadedBackend):
    """A threaded recording backend on 127.0.0.1, stopped by `stop()`."""

    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listen()

    def saw(self, marker: bytes) -> bool:
        """Whether a request whose target contains `marker` arrived."""
        with self._lock:
            return any(marker in r.target for r in self.received)

    def requests_for(self, marker: bytes) -> list[Received]:
        with self._lock:
            return [r for r in self.received if marker in r.target]

    def _serve(self, conn: socket.socket, number: int) -> None:
        reader = conn.makefile("rb")
        with conn, reader:
            while True:
                try:
                    head = _read_head(reader)
                    if head is None:
                        return
                    target = head.split(b" ", 2)[1]
                    early = target.endswith(b"/early")
                    if early:
                        conn.sendall(OK)
                    request = Received(number, head, _read_body(reader, head))
                except (OSError, ValueError):
                    return
                with self._lock:
                    self.received.append(request)
                if early:
                    continue
                name = target.removeprefix(b"/resp/").decode("latin-1")
                response = RESPONSES.get(name, OK) if target.startswith(b"/resp/") else OK
                try:
                    conn.sendall(response)
                except OSError:
                    return
                if name == "close-delimited":
                    return


def _read_head(reader) -> bytes | None:
    """A request head up to its empty line; None if the connection ended first."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline(65536)
        if not line:
            return None
        head += line
    return head


def _read_body(reader, head: bytes) -> bytes:
    """The body the head announces, exactly as framed (chunks and trailers included)."""
    lowered = head.lower()
    body = b""
    if b"\r\ntransfer-encoding: chunked\r\n" in lowered:
        while True:
            size_line = reader.readline(65536)
            body += size_line
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while True:  # trailer section, up to the empty line
                    line = reader.readline(65536)
                    body += line
                    if line in (b"\r\n", b""):
                        break
                break
            body += reader.read(size + 2)
    else:
        for line in lowered.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                body = reader.read(int(line.split(b":")[1]))
    return body
