"""The two backends every proxy forwards to: one nginx, two ports, fixed answers.

nginx answers in a few microseconds, so the proxy, not the backend, limits the
rate. Paths: anything returns a small fixed body, `/64k` a 64 KiB static file,
`/upload` reads the whole request body (in memory) and answers a small body.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from perf import procs

BODY_64K = 64 * 1024


@dataclass
class Backends:
    proc: subprocess.Popen
    ports: list[int]


def _config(workdir: Path, ports: list[int]) -> str:
    servers = []
    for i, port in enumerate(ports, start=1):
        # A proxy opens up to 1,000 connections at once (c1000): the backlog takes
        # them all (nginx's default, 511, would drop handshakes).
        #
        # /upload must read the whole body before it answers, as an application does.
        # `return` would answer at once and discard the body afterwards; a proxy that
        # gets the answer while still sending the body must then drop the client
        # connection. So nginx reads the body (proxy_pass buffers it in memory) and
        # asks itself, without the body, for the answer.
        servers.append(
            f"""
    upstream self{i} {{ server {procs.LOOPBACK}:{port}; keepalive 64; }}
    server {{
        listen {procs.LOOPBACK}:{port} reuseport backlog=4096;
        location / {{ return 200 "hello from backend-{i}\\n"; }}
        location = /64k {{ alias {workdir}/64k.bin; default_type application/octet-stream; }}
        location = /upload {{
            proxy_pass http://self{i}/uploaded;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location = /uploaded {{ return 200 "upload ok from backend-{i}\\n"; }}
    }}"""
        )
    return f"""
worker_processes 2;
daemon off;
pid {workdir}/backend-nginx.pid;
error_log {workdir}/backend-nginx-error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    default_type text/plain;
    sendfile on;
    tcp_nopush on;
    # Proxies keep their upstream connections: never close them on our side.
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    # 1 MiB uploads stay in memory (no temp file) and are accepted.
    client_max_body_size 2m;
    client_body_buffer_size 2m;
{"".join(servers)}
}}
"""


def start(workdir: Path) -> Backends:
    """Start the backend nginx on two free ports and wait until both answer."""
    (workdir / "64k.bin").write_bytes(b"x" * BODY_64K)
    ports = [procs.free_port(), procs.free_port()]
    conf = workdir / "backend-nginx.conf"
    conf.write_text(_config(workdir, ports))
    log = workdir / "backend-nginx.log"
    proc = procs.spawn(["nginx", "-c", str(conf), "-p", str(workdir)], log)
    try:
        for port in ports:
            procs.wait_ready(proc, port, ["backend"], log)
    except BaseException:
        procs.stop(proc)
        raise
    return Backends(proc, ports)
