"""Side-by-side benchmark: portside vs nginx in front of the same whoami backends.

Each proxy runs one process (one portside worker, `worker_processes 1`),
keep-alive on both sides, Host routing and X-Forwarded headers on both. For
each proxy it reports wrk's requests/s and latency, and the CPU seconds per
request spent by the proxy's own processes (user and system separately, read
from /proc/<pid>/task/*/stat before and after), which stays meaningful on a
shared 2-core box where wrk, the backends and the proxy compete for CPU.

Usage: python perf/bench.py [--duration 10] [--connections 50]
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

HOST = "whoami.localhost"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def cpu_ticks(root_pid: int) -> tuple[int, int]:
    """(user, system) clock ticks of a process tree, summed over every thread."""
    user = system = 0
    procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    for proc in procs:
        task_dir = f"/proc/{proc.pid}/task"
        try:
            tids = os.listdir(task_dir)
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open(f"{task_dir}/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            user += int(fields[11])  # utime, field 14 of stat(5)
            system += int(fields[12])  # stime, field 15
    return user, system


def peak_rss(root_pid: int) -> int:
    procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    return max(p.memory_info().rss for p in procs)


@dataclass
class Result:
    proxy: str
    rps: float
    p50_ms: float
    p99_ms: float
    user_us: float
    sys_us: float
    rss_mb: float
    errors: int


def run_wrk(port: int, duration: int, connections: int) -> tuple[float, float, float, int, int]:
    """Run wrk; return (rps, p50 ms, p99 ms, requests, errors)."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-H",
            f"Host: {HOST}",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rps, latency("50"), latency("99"), requests, errors


def measure(name: str, root_pid: int, port: int, args: argparse.Namespace) -> Result:
    run_wrk(port, 2, args.connections)  # warm-up: pools filled, caches hot
    before = cpu_ticks(root_pid)
    rps, p50, p99, requests, errors = run_wrk(port, args.duration, args.connections)
    after = cpu_ticks(root_pid)
    per_request = 1e6 / CLK_TCK / max(requests, 1)
    return Result(
        name,
        rps,
        p50,
        p99,
        (after[0] - before[0]) * per_request,
        (after[1] - before[1]) * per_request,
        peak_rss(root_pid) / 1e6,
        errors,
    )


def start_portside(tmp: Path, backends: list[int]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    servers = ", ".join(f'{{ url = "http://127.0.0.1:{p}" }}' for p in backends)
    (tmp / "dynamic.toml").write_text(
        textwrap.dedent(
            f"""
            [http.routers.whoami]
            rule = "Host(`{HOST}`)"
            service = "whoami"
            [http.services.whoami.loadBalancer]
            servers = [ {servers} ]
            """
        )
    )
    (tmp / "static.toml").write_text(
        textwrap.dedent(
            f"""
            [entryPoints.web]
            address = "127.0.0.1:{port}"
            [workers]
            count = 1
            [log]
            level = "WARN"
            [providers.file]
            filename = "{tmp / "dynamic.toml"}"
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "portside.master.cli", "--config", str(tmp / "static.toml")]
    )
    wait_listening(port)
    return proc, port


def start_nginx(tmp: Path, backends: list[int]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    servers = "\n".join(f"server 127.0.0.1:{p};" for p in backends)
    conf = tmp / "nginx.conf"
    conf.write_text(
        textwrap.dedent(
            f"""
            worker_processes 1;
            daemon off;
            pid {tmp}/nginx.pid;
            error_log {tmp}/nginx-error.log warn;
            events {{ worker_connections 4096; }}
            http {{
                access_log off;
                upstream whoami {{
                    {servers}
                    keepalive 128;
                }}
                server {{
                    listen 127.0.0.1:{port} reuseport;
                    server_name {HOST};
                    location / {{
                        proxy_pass http://whoami;
                        proxy_http_version 1.1;
                        proxy_set_header Connection "";
                        proxy_set_header Host $host;
                        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                        proxy_set_header X-Forwarded-Host $host;
                        proxy_set_header X-Forwarded-Proto $scheme;
                        proxy_set_header X-Forwarded-Port $server_port;
                        proxy_set_header X-Real-Ip $remote_addr;
                    }}
                }}
                server {{
                    listen 127.0.0.1:{port} default_server;
                    return 404;
                }}
            }}
            """
        )
    )
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(tmp)])
    wait_listening(port)
    return proc, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install wrk nginx-light)", file=sys.stderr)
            return 2

    procs: list[subprocess.Popen] = []
    results = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        try:
            backends = [free_port(), free_port()]
            for i, port in enumerate(backends):
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "portside.master.cli",
                            "whoami",
                            "--listen",
                            f"127.0.0.1:{port}",
                            "--name",
                            f"whoami-{i + 1}",
                        ],
                        stdout=subprocess.DEVNULL,
                    )
                )
                wait_listening(port)
            for name, start in (("nginx", start_nginx), ("portside", start_portside)):
                proc, port = start(tmp, backends)
                procs.append(proc)
                results.append(measure(name, proc.pid, port, args))
                proc.send_signal(signal.SIGQUIT if name == "nginx" else signal.SIGTERM)
                proc.wait(20)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(10)

    nginx = results[0]
    print(
        f"\nsmall GET, keep-alive, 1 proxy process, wrk -c{args.connections} "
        f"-d{args.duration}s, 2 whoami backends\n"
    )
    print(
        "| proxy | req/s | p50 ms | p99 ms | user µs/req | sys µs/req | total µs/req "
        "| ×nginx CPU | peak RSS MB | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        total = r.user_us + r.sys_us
        ratio = total / (nginx.user_us + nginx.sys_us)
        print(
            f"| {r.proxy} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.user_us:.1f} "
            f"| {r.sys_us:.1f} | {total:.1f} | {ratio:.2f} | {r.rss_mb:.1f} | {r.errors} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
