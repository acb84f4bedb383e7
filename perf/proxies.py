"""The proxies under test, each configured to do the same work.

Every proxy listens on 127.0.0.1, routes by exact Host to one pool of the two
backends (round robin), keeps connections alive on both sides, streams bodies,
and sets X-Forwarded-For, -Host, -Proto, -Port, -Server and X-Real-Ip, as
portside does. `workers` is the number of proxy processes (threads for HAProxy,
GOMAXPROCS for Caddy). The floor (perf/floor.py) is the exception, on purpose: it
does the least such a proxy can, as a reference for what portside's own work costs.

The 1,000-route table is 1,000 Host routers that all lead to the same service,
as in Traefik when many hostnames (one router each) share one service. That
isolates the cost of the route lookup, which is what the scenario measures.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from perf import _venv, procs

# Idle upstream connections kept per worker: enough for 1,000 client connections
# over two backends, so no proxy has to reconnect to a backend under load.
UPSTREAM_IDLE = 1024


@dataclass
class Running:
    """A started proxy: its root process and the port it listens on."""

    name: str
    proc: subprocess.Popen
    port: int

    def pids(self) -> list[int]:
        """Every process of the proxy (its CPU time is the proxy's cost)."""
        return [p.pid for p in procs.tree(self.proc.pid)]

    def worker_pids(self) -> list[int]:
        """The processes that serve traffic (their RSS is the per-worker memory)."""
        family = procs.tree(self.proc.pid)
        if self.name == "portside":
            workers = []
            for p in family[1:]:
                try:
                    if p.name().startswith("portside-w"):
                        workers.append(p.pid)
                except psutil.NoSuchProcess:
                    pass
            return workers
        if self.name == "nginx":
            return [p.pid for p in family[1:]]  # the master only supervises
        if self.name == "floor":
            return [p.pid for p in family]  # every process serves
        return [p.pid for p in family[:1]]  # HAProxy and Caddy: one process


def version(name: str) -> str:
    """A one-line version string for the report, e.g. 'nginx 1.22.1'."""
    commands = {
        "nginx": ["nginx", "-v"],
        "haproxy": ["haproxy", "-v"],
        "caddy": ["caddy", "version"],
    }
    if name == "portside":
        return f"portside (Python {sys.version.split()[0]})"
    if name == "floor":
        return "floor (perf/floor.py, the least a uvloop+httptools relay does)"
    try:
        out = subprocess.run(commands[name], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return name
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", out.stdout + out.stderr)
    return f"{name} {match.group(1)}" if match else name


def available(name: str) -> bool:
    """Whether this proxy can run here (portside and the floor always can: they are
    this repository)."""
    return name in ("portside", "floor") or shutil.which(name) is not None


def start(
    name: str,
    folder: Path,
    backends: list[int],
    hosts: list[str],
    workers: int,
    cpus: set[int] | None = None,
) -> Running:
    """Write the proxy's configuration in `folder`, start it on `cpus` (all if None),
    and wait until every route answers."""
    port = procs.free_port()
    folder.mkdir(parents=True, exist_ok=True)
    argv, env = _WRITERS[name](folder, port, backends, hosts, workers)
    log = folder / "proxy.log"
    proc = procs.spawn(argv, log, env, cpus)
    try:
        # The first and the last route: a route table that loaded halfway is not ready.
        procs.wait_ready(proc, port, sorted({hosts[0], hosts[-1]}), log)
    except BaseException:
        procs.stop(proc)
        raise
    return Running(name, proc, port)


Argv = tuple[list[str], dict[str, str]]


def _portside(folder: Path, port: int, backends: list[int], hosts: list[str], n: int) -> Argv:
    servers = ", ".join(f'{{ url = "http://{procs.LOOPBACK}:{p}" }}' for p in backends)
    routers = "".join(
        f'[http.routers.r{i}]\nrule = "Host(`{host}`)"\nservice = "app"\n\n'
        for i, host in enumerate(hosts)
    )
    dynamic = folder / "dynamic.toml"
    dynamic.write_text(f"{routers}[http.services.app.loadBalancer]\nservers = [ {servers} ]\n")
    static = folder / "static.toml"
    static.write_text(
        f"""[entryPoints.web]
address = "{procs.LOOPBACK}:{port}"

[workers]
count = {n}

[serversTransport]
maxIdleConnsPerHost = {UPSTREAM_IDLE // len(backends)}

[log]
level = "WARN"

[providers.file]
filename = "{dynamic}"
"""
    )
    return [sys.executable, "-m", "portside.master.cli", "--config", str(static)], {}


def _nginx(folder: Path, port: int, backends: list[int], hosts: list[str], n: int) -> Argv:
    upstream = "\n".join(f"        server {procs.LOOPBACK}:{p};" for p in backends)
    # One server block per hostname: how nginx virtual hosts are usually written.
    vhosts = "".join(
        f"    server {{ listen {procs.LOOPBACK}:{port}; server_name {host}; "
        "location / { proxy_pass http://app; } }\n"
        for host in hosts
    )
    conf = folder / "nginx.conf"
    conf.write_text(
        f"""worker_processes {n};
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    # No connection is closed after N requests on either side (portside never does).
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server_names_hash_max_size 4096;
    server_names_hash_bucket_size 64;
    # Stream bodies both ways, in memory, as portside and HAProxy do. An upload is
    # read in chunks of up to 256 KiB, as portside reads it (uvloop's 256,000-byte
    # read buffer); nginx's default of 16 KiB costs it twice the system time. A
    # buffer of 2 MiB made nginx allocate 1 MiB per upload, which glibc faulted in
    # anew (about 60,000 page faults a second; about 200 at this size, 1 for
    # portside), so its CPU per upload and its peak RSS (44 to 62 MB) moved between runs.
    client_max_body_size 2m;
    client_body_buffer_size 256k;
    proxy_request_buffering off;
    proxy_buffer_size 16k;
    proxy_buffers 8 16k;
    proxy_max_temp_file_size 0;
    # Keep-alive to the backends, and the same forwarded headers as portside.
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Host $host;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Port $server_port;
    proxy_set_header X-Forwarded-Server $hostname;
    proxy_set_header X-Real-Ip $remote_addr;
    upstream app {{
{upstream}
        keepalive {UPSTREAM_IDLE};
        keepalive_requests 1000000;
    }}
    # Unknown Host: 404, as portside answers when no router matches. The listen
    # backlog is portside's and HAProxy's (4096): with nginx's default of 511, the
    # 1,000 connections of c1000 arriving at once overflowed the accept queue
    # (489 handshakes dropped, counted in ListenOverflows), and each dropped
    # handshake costs its request 1-3 s of SYN-ACK retransmits.
    server {{ listen {procs.LOOPBACK}:{port} default_server reuseport backlog=4096; return 404; }}
{vhosts}}}
"""
    )
    return ["nginx", "-c", str(conf), "-p", str(folder)], {}


def _haproxy(folder: Path, port: int, backends: list[int], hosts: list[str], n: int) -> Argv:
    hostmap = folder / "hosts.map"
    hostmap.write_text("".join(f"{host} app\n" for host in hosts))
    servers = "\n".join(
        f"    server b{i} {procs.LOOPBACK}:{p}" for i, p in enumerate(backends, start=1)
    )
    conf = folder / "haproxy.cfg"
    conf.write_text(
        f"""global
    nbthread {n}
    # Two descriptors per connection: this fits a 20,000 open-files limit.
    maxconn 4096

defaults
    mode http
    maxconn 4096
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 300s
    option http-keep-alive
    option forwardfor
    http-reuse always

frontend web
    bind {procs.LOOPBACK}:{port}
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Port %[dst_port]
    http-request set-header X-Forwarded-Server %[hostname]
    http-request set-header X-Real-Ip %[src]
    # Host -> backend from a map file: one lookup, however many hosts.
    use_backend %[req.hdr(host),lower,map({hostmap})]

backend app
    balance roundrobin
{servers}
"""
    )
    # -db: foreground, no master process; one process with `nbthread` threads.
    return ["haproxy", "-db", "-f", str(conf)], {}


def _caddy(folder: Path, port: int, backends: list[int], hosts: list[str], n: int) -> Argv:
    upstreams = " ".join(f"{procs.LOOPBACK}:{p}" for p in backends)
    conf = folder / "Caddyfile"
    # One site and one reverse_proxy (one upstream pool) behind a host matcher;
    # unknown hosts get 404. Caddy sets X-Forwarded-For/-Host/-Proto itself.
    conf.write_text(
        "{\n    admin off\n    auto_https off\n}\n"
        f"http://:{port} {{\n    bind {procs.LOOPBACK}\n"
        f"    @routed host {' '.join(hosts)}\n"
        f"    handle @routed {{\n        reverse_proxy {upstreams} {{\n"
        "            lb_policy round_robin\n"
        "            header_up X-Forwarded-Port {http.request.port}\n"
        "            header_up X-Forwarded-Server {system.hostname}\n"
        "            header_up X-Real-Ip {http.request.remote.host}\n"
        "        }\n    }\n    handle {\n        respond 404\n    }\n}\n"
    )
    argv = ["caddy", "run", "--config", str(conf), "--adapter", "caddyfile"]
    # Caddy keeps state and an autosaved config under these: keep them in the work dir.
    env = {"XDG_DATA_HOME": str(folder), "XDG_CONFIG_HOME": str(folder), "HOME": str(folder)}
    return argv, {"GOMAXPROCS": str(n), **env}


def _floor(folder: Path, port: int, backends: list[int], hosts: list[str], n: int) -> Argv:
    hostfile = folder / "hosts"
    hostfile.write_text("\n".join(hosts) + "\n")
    ports = ",".join(map(str, backends))
    argv = [sys.executable, "-m", "perf.floor", str(port), str(hostfile), ports, str(n)]
    return argv, {"PYTHONPATH": str(_venv.ROOT)}


_WRITERS = {
    "portside": _portside,
    "nginx": _nginx,
    "haproxy": _haproxy,
    "caddy": _caddy,
    "floor": _floor,
}
NAMES = tuple(_WRITERS)
