"""Microbenchmark of the worker's Python request path, without sockets.

Drives a ClientConnection and an UpstreamConnection with in-memory
transports: one keep-alive GET in, one small response back, many times.
What it measures is the user CPU our own Python code costs per request,
free of syscalls and of the noise of a shared machine, so each hot-path
change can be judged in seconds. `python perf/hotpath.py [--routers N]`
(requests spread over the N routers' hosts, as in the routes1000 scenario);
perf/instructions.py counts its instructions per request with callgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import uvloop

from portside.master.static_config import parse_static
from portside.worker.client import ClientConnection
from portside.worker.runtime import WorkerRuntime
from portside.worker.upstream import UpstreamConnection

REQUEST = b"GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 13:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 21\r\nConnection: keep-alive\r\n\r\n"
    b"hello from backend-1\n"
)


class MemoryTransport(asyncio.Transport):
    """A socket-free transport for driving the worker's protocol objects.

    It counts the bytes written and drops them. close() reports the loss to
    the protocol on a later loop turn and then lets go of it, as uvloop does.
    """

    def __init__(self, protocol: asyncio.BaseProtocol, peer: tuple[str, int]) -> None:
        super().__init__()
        self.protocol: asyncio.BaseProtocol | None = protocol
        self.peer = peer
        self.written = 0
        self._closing = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, parts) -> None:
        for p in parts:
            self.written += len(p)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self._lost)

    abort = close

    def _lost(self) -> None:
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.connection_lost(None)


def _hosts(routers: int) -> list[str]:
    return ["whoami.localhost"] + [f"host{i}.bench" for i in range(routers - 1)]


def _requests(routers: int) -> list[bytes]:
    """1,000 requests over the routers' hosts in a fixed random order, as wrk's script."""
    hosts = _hosts(routers)
    order = random.Random(12345)
    return [REQUEST % hosts[order.randrange(routers)].encode() for _ in range(1000)]


def _snapshot(routers: int) -> dict:
    rules = [
        {"name": f"r{i}@file", "rule": f"Host(`{host}`)"} for i, host in enumerate(_hosts(routers))
    ]
    return {
        "generation": 1,
        "services": {
            "whoami@file": {
                "slot": 0,
                "servers": [
                    {"url": "http://127.0.0.1:1", "host": "127.0.0.1", "port": 1, "weight": 1},
                    {"url": "http://127.0.0.1:2", "host": "127.0.0.1", "port": 2, "weight": 1},
                ],
            }
        },
        "routers": [
            {**r, "service": "whoami@file", "entryPoints": ["web"], "priority": len(r["rule"])}
            for r in rules
        ],
    }


async def run(iterations: int, routers: int) -> tuple[float, float]:
    """Microseconds of CPU per request, and milliseconds to apply a route update."""
    config = parse_static({"entryPoints": {"web": {"address": "127.0.0.1:8000"}}}, "bench")
    counters = memoryview(bytearray(8 * 16)).cast("Q")
    runtime = WorkerRuntime(config, counters)
    runtime.apply_snapshot(_snapshot(routers + 1))
    # What every worker spends on a route update: here one router goes away, as
    # when a container stops.
    snapshot = _snapshot(routers)
    start = time.process_time()
    runtime.apply_snapshot(snapshot)
    update_ms = (time.process_time() - start) * 1e3
    client = ClientConnection(runtime, runtime.entry_points["web"])
    client_transport = MemoryTransport(client, ("127.0.0.1", 50000))
    client.connection_made(client_transport)
    # One pooled backend connection per server, as after warm-up.
    upstreams = []
    for service in runtime._pools.values():
        conn = UpstreamConnection(service)
        conn.connection_made(MemoryTransport(conn, ("127.0.0.1", 1)))
        service.release(conn)
        upstreams.append(conn)

    requests = _requests(routers)
    turn = 0

    def one_request() -> None:
        nonlocal turn
        turn = (turn + 1) % 1000
        client.data_received(requests[turn])
        client.current.upstream.data_received(RESPONSE)

    for _ in range(1000):
        one_request()
    start = time.process_time()
    for _ in range(iterations):
        one_request()
    elapsed = time.process_time() - start
    # Every request was answered on the one connection, which stayed open.
    assert client.current is None and client_transport.written > 0
    assert not client_transport.is_closing()
    return elapsed / iterations * 1e6, update_ms


def main() -> None:
    """Drive the request path in memory and print the time per request."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--routers", type=int, default=1)
    args = parser.parse_args()
    per_request, update_ms = uvloop.run(run(args.iterations, args.routers))
    print(f"route update to {args.routers} routers applied in {update_ms:.1f} ms")
    print(f"{per_request:.2f} µs of Python per proxied request ({args.routers} routers)")


if __name__ == "__main__":
    main()
