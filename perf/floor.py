"""The floor: the least work a uvloop+httptools reverse proxy can do per request.

`perf/run --proxies portside,nginx,floor` measures it beside the others. It is
not a proxy anyone should run: it exists to show how much of portside's CPU
per request is the event loop, the parser and the interpreter, which any
Python proxy on uvloop and httptools pays, and how much is portside's own work.

What it does, per request, is what every proxy in perf/ does at the least:
it parses the request head, routes by exact Host, picks a backend round robin,
reuses an idle keep-alive connection to it, and sends the head on with the
same forwarded headers (X-Forwarded-For, -Host, -Proto, -Port, -Server,
X-Real-Ip). Request bodies are relayed as they arrive. What it does not do:
the response goes back byte for byte, its head neither parsed into fields nor
rebuilt (the parser only finds where the message ends; a request that asks to
close gets its response's `Connection: keep-alive` replaced); and there are no
timeouts, no limits, no metrics, no error handling beyond a
404, and no check that the request is valid HTTP beyond llhttp's own.

    python perf/floor.py PORT HOSTS_FILE BACKEND_PORT[,BACKEND_PORT...] [PROCESSES]
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

from portside.worker.allocator import fix_malloc_thresholds

LOOPBACK = "127.0.0.1"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
_KEEP_ALIVE = b"\r\nConnection: keep-alive\r\n"
_CLOSE = b"\r\nConnection: close\r\n"


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
            upstream.client = client
            upstream.fresh = True
            upstream.write(head)
            return upstream
        upstream = Upstream(self, index, client, head)
        loop = asyncio.get_running_loop()
        loop.create_task(loop.create_connection(lambda: upstream, LOOPBACK, self.backends[index]))
        return upstream


class Upstream(asyncio.Protocol):
    """A keep-alive connection to a backend; responses go back to the client as read."""

    def __init__(self, relay: Relay, index: int, client: Client, head: bytes) -> None:
        self.relay = relay
        self.index = index
        self.client: Client | None = client
        self.fresh = True  # no byte of the current response read yet
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] | None = [head]  # written once connected
        # Only on_message_complete: the head is not split into fields.
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        pending, self.pending = self.pending, None
        transport.writelines(pending)  # type: ignore[attr-defined, arg-type]

    def write(self, data: bytes) -> None:
        """Send request bytes, or keep them until the connection is made."""
        if self.pending is not None:
            self.pending.append(data)
        else:
            self.transport.write(data)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is not None:
            if client.closing and self.fresh:
                # The one head rewrite: the client asked to close, the backend
                # connection stays open, and the client must be told (RFC 9112 §9.6).
                client.transport.write(data.replace(_KEEP_ALIVE, _CLOSE, 1))
            else:
                client.transport.write(data)
        self.fresh = False
        self.parser.feed_data(data)

    # Flow control: a backend that reads slower than the client sends stops the
    # client's reads, so that an upload is not piled up in memory here.
    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.transport.resume_reading()

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        self.relay.idle[self.index].append(self)
        if client is not None:
            client.response_complete()

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
        self.upstream: Upstream | None = None
        self.fields: list[bytes] = []
        self.host = b""
        self.url = b""
        self.closing = False  # the current request asked to close the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        ip = transport.get_extra_info("peername")[0].encode()
        self.by = b"X-Forwarded-For: %s\r\nX-Real-Ip: %s\r\n%s" % (ip, ip, self.relay.fixed)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 4 and name.lower() == b"host":
            self.host = value
        elif len(name) != 10 or name.lower() != b"connection":  # hop-by-hop: not sent on
            self.fields += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        fields, self.fields = self.fields, []
        self.closing = not self.parser.should_keep_alive()
        if self.host not in self.relay.hosts:
            self.transport.write(_NOT_FOUND)
            return
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n%sX-Forwarded-Host: %s\r\n%s\r\n" % (
            self.parser.get_method(),
            self.url,
            self.host,
            b"".join(fields),
            self.host,
            self.by,
        )
        self.upstream = self.relay.send(self, head)

    def on_body(self, body: bytes) -> None:
        if self.upstream is not None:
            self.upstream.write(body)

    def response_complete(self) -> None:
        """The backend's response has all been passed on."""
        self.upstream = None
        if self.closing:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.client = None


async def serve(port: int, hosts: set[bytes], backends: list[int]) -> None:
    """Accept and relay until killed."""
    loop = asyncio.get_running_loop()
    relay = Relay(port, hosts, backends)
    server = await loop.create_server(
        lambda: Client(relay), LOOPBACK, port, reuse_port=True, backlog=4096
    )
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
    for _ in range(processes - 1):
        if os.fork() == 0:
            break
    uvloop.run(serve(port, hosts, backends))


if __name__ == "__main__":
    main()
