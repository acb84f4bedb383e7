"""The floor: the least work a uvloop+httptools reverse proxy can do per request.

`perf/run --proxies portside,nginx,floor` measures it beside the others. It is
not a proxy anyone should run: it exists to show how much of portside's CPU
per request is the event loop, the parser and the interpreter, which any
Python proxy on uvloop and httptools pays, and how much is portside's own work.

What it does per request is what every proxy in perf/ does at the least with
what wrk sends: it parses the request head into fields, routes by the Host
header's bytes as sent, picks a backend round robin, reuses an idle keep-alive
connection to it, and sends the head on with X-Forwarded-For, -Host, -Proto,
-Port, -Server and X-Real-Ip added. Bodies are relayed both ways as they
arrive, with flow control. What it does not do:

- the response goes back byte for byte, its head neither parsed into fields nor
  rebuilt: the parser only finds where the message ends. The one exception is a
  request that asked to close, whose response is made to say so;
- of the request's hop-by-hop fields only Connection is dropped, and forwarded
  fields the client sent are passed on, not replaced (wrk sends neither);
- there are no timeouts, no limits, no metrics, and no error handling beyond a
  404 and closing the client when a backend cannot be reached.

    python -m perf.floor PORT HOSTS_FILE BACKEND_PORT[,BACKEND_PORT...] [PROCESSES]
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import sys
from pathlib import Path

import httptools
import uvloop

from perf.procs import LOOPBACK
from portside.worker.allocator import fix_malloc_thresholds

_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
_KEEP_ALIVE = b"\r\nConnection: keep-alive\r\n"
_CLOSE = b"\r\nConnection: close\r\n"
_HEAD_END = b"\r\n\r\n"


def told_to_close(data: bytes) -> bytes:
    """The first bytes of a response, made to say that the connection closes after it.

    The floor keeps its backend connection open, so the backend's own answer
    (usually `Connection: keep-alive`, or nothing, meaning the same in
    HTTP/1.1) would tell the client the opposite (RFC 9112 §9.6).
    """
    if _KEEP_ALIVE in data:
        return data.replace(_KEEP_ALIVE, _CLOSE, 1)
    return data.replace(_HEAD_END, _CLOSE + b"\r\n", 1)


class Relay:
    """What every connection of one process shares: routes, backends, idle connections."""

    def __init__(self, port: int, hosts: set[bytes], backends: list[int]) -> None:
        self.hosts = hosts
        self.backends = backends
        self.turn = itertools.cycle(range(len(backends)))
        self.idle: list[list[Upstream]] = [[] for _ in backends]
        # The forwarded headers that are the same for every request of a process.
        self.fixed = (
            b"X-Forwarded-Proto: http\r\nX-Forwarded-Port: %d\r\nX-Forwarded-Server: %s\r\n"
            % (port, socket.gethostname().encode())
        )

    def send(self, client: Client, head: bytes) -> Upstream:
        """Send a request head to the next backend, on an idle connection if there is one."""
        index = next(self.turn)
        idle = self.idle[index]
        if idle:
            upstream = idle.pop()
            upstream.start(client)
            upstream.write(head)
            return upstream
        upstream = Upstream(self, index, client, head)
        loop = asyncio.get_running_loop()
        connect = loop.create_task(
            loop.create_connection(lambda: upstream, LOOPBACK, self.backends[index])
        )
        connect.add_done_callback(upstream.connect_done)
        return upstream


class Upstream(asyncio.Protocol):
    """A keep-alive connection to a backend; responses go back to the client as read."""

    def __init__(self, relay: Relay, index: int, client: Client, head: bytes) -> None:
        self.relay = relay
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] | None = [head]  # written once connected
        # Only on_message_complete: the head is not split into fields.
        self.parser = httptools.HttpResponseParser(self)
        self.start(client)

    def start(self, client: Client) -> None:
        """Take on a client's request."""
        self.client: Client | None = client
        self.fresh = True  # no byte of its response read yet
        self.writing_paused = False  # the backend is behind: its client's reads are paused

    def connect_done(self, connect: asyncio.Task[object]) -> None:
        """A failed connect closes the client that was waiting for it."""
        if connect.exception() is not None and self.client is not None:
            self.client.transport.close()

    def write(self, data: bytes) -> None:
        """Send request bytes, or keep them until the connection is made."""
        if self.pending is not None:
            self.pending.append(data)
        else:
            self.transport.write(data)  # type: ignore[union-attr]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        pending, self.pending = self.pending, None
        transport.writelines(pending)  # type: ignore[attr-defined, arg-type]

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is not None:
            fresh, self.fresh = self.fresh, False
            client.transport.write(told_to_close(data) if fresh and client.closing else data)
        self.parser.feed_data(data)

    # Flow control: a backend that reads slower than the client sends stops the
    # client's reads, so that an upload is not piled up in memory here.
    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.client is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.client is not None:
            self.client.transport.resume_reading()

    def on_message_complete(self) -> None:
        """The response is complete: back to the idle pool, if the request is too."""
        client, self.client = self.client, None
        if client is None or client.upstream is not self:
            return
        # A pause either side asked of the other ends with the exchange: the
        # resume would no longer reach it, and a paused connection hangs its next use.
        if self.writing_paused:
            client.transport.resume_reading()
        if client.writing_paused:
            self.transport.resume_reading()  # type: ignore[union-attr]
        client.response_complete()
        if client.request_done and not self.writing_paused and self.parser.should_keep_alive():
            self.relay.idle[self.index].append(self)
        else:
            # A backend that answered before the request was all sent, or that
            # closes: what it reads next would not be the start of a request.
            self.transport.close()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        idle = self.relay.idle[self.index]
        if self in idle:
            idle.remove(self)
        if self.client is not None:
            self.client.transport.close()


class Client(asyncio.Protocol):
    """A client connection: one request at a time, as wrk sends them."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.forwarded = b""  # the forwarded fields of this client, made once
        self.upstream: Upstream | None = None
        self.fields: list[bytes] = []
        self.host = b""
        self.url = b""
        self.closing = False  # the current request asked to close the connection
        self.request_done = True  # the current request's body has all been read
        self.writing_paused = False  # the client is behind: its backend's reads are paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ip = transport.get_extra_info("peername")[0].encode()
        self.forwarded = b"X-Forwarded-For: %s\r\nX-Real-Ip: %s\r\n%s" % (
            ip,
            ip,
            self.relay.fixed,
        )

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()  # type: ignore[union-attr]

    # Flow control the other way: a client that reads slower than the backend sends.
    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    def on_url(self, url: bytes) -> None:
        """A piece of the request target (llhttp may split it across reads)."""
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        """One request field: Host is kept apart, Connection dropped, the rest passed on."""
        if len(name) == 4 and name.lower() == b"host":
            self.host = value
        elif len(name) != 10 or name.lower() != b"connection":
            self.fields += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        """Route the request and send its head on."""
        fields, host, url = self.fields, self.host, self.url
        self.fields, self.host, self.url = [], b"", b""
        self.closing = not self.parser.should_keep_alive()
        self.request_done = False
        if host not in self.relay.hosts:
            self.transport.write(_NOT_FOUND)  # type: ignore[union-attr]
            if self.closing:
                self.transport.close()  # type: ignore[union-attr]
            return
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n%sX-Forwarded-Host: %s\r\n%s\r\n" % (
            self.parser.get_method(),
            url,
            host,
            b"".join(fields),
            host,
            self.forwarded,
        )
        self.upstream = self.relay.send(self, head)

    def on_body(self, body: bytes) -> None:
        """A piece of the request body, passed on as it comes."""
        if self.upstream is not None:
            self.upstream.write(body)

    def on_message_complete(self) -> None:
        """The whole request has been read."""
        self.request_done = True

    def response_complete(self) -> None:
        """The backend's response has all been passed on."""
        self.upstream = None
        if self.closing:
            self.transport.close()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            # Its response would be written to a closed transport; the backend
            # connection is not reused either, since it is mid-response.
            self.upstream.client = None
            if self.upstream.transport is not None:
                self.upstream.transport.close()


def listen(port: int) -> socket.socket:
    """A listening socket of its own for one process, on the shared port (SO_REUSEPORT)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((LOOPBACK, port))
    sock.listen(4096)
    return sock


async def serve(sock: socket.socket, port: int, hosts: set[bytes], backends: list[int]) -> None:
    """Accept on `sock` and relay until killed."""
    loop = asyncio.get_running_loop()
    relay = Relay(port, hosts, backends)
    server = await loop.create_server(lambda: Client(relay), sock=sock)
    await server.serve_forever()


def main() -> None:
    """Start PROCESSES processes (1 by default), each with its own SO_REUSEPORT socket."""
    port = int(sys.argv[1])
    hosts = set(Path(sys.argv[2]).read_bytes().split())
    backends = [int(p) for p in sys.argv[3].split(",")]
    processes = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    # portside's malloc settings: without them an upload's 256 KB reads are
    # mapped and faulted in anew, at four times the system time (allocator.py).
    fix_malloc_thresholds()
    # Every socket listens before any process serves, as nginx's master opens
    # its workers' sockets: the kernel spreads connections over the sockets
    # that exist, so a readiness probe answered by the first process must not
    # let wrk connect before the others listen.
    sockets = [listen(port) for _ in range(processes)]
    mine = sockets[0]
    for sock in sockets[1:]:
        if os.fork() == 0:
            mine = sock
            break
    for sock in sockets:
        if sock is not mine:
            sock.close()
    uvloop.run(serve(mine, port, hosts, backends))


if __name__ == "__main__":
    main()
