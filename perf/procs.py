"""Starting, probing and stopping the processes a benchmark needs."""

from __future__ import annotations

import http.client
import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def raise_nofile_limit(wanted: int = 65536) -> int:
    """Raise RLIMIT_NOFILE for this process and the children it starts.

    1,000 client connections cost a proxy 2,000 descriptors (client + backend
    side), and wrk needs 1,000 too; the usual soft limit is 1,024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            # Root may raise the hard limit too (up to fs.nr_open).
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    new_soft = max(soft, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    return new_soft


def cpu_split(workers: int) -> tuple[set[int], set[int]] | None:
    """The CPUs for the proxy under test and the CPUs for everything else.

    The proxy gets the last `workers` CPUs to itself; wrk, the backends and the
    harness share the rest. None, and nothing pinned, if there are too few CPUs.

    Why: left to the scheduler on two cores, wrk, the proxy and the two backend
    workers fall into one of two placements. The p99 of 1-second slices of one
    proxy jumped between about 1.5 and 3.5 ms from slice to slice, nginx's CPU
    per request by 10% with it, so a ratio depended on which placement each
    proxy happened to get. Pinned, the p99 and CPU of successive slices stay
    within a few percent (README.md, "How well the ratios repeat").
    """
    available = sorted(os.sched_getaffinity(0))
    if len(available) <= workers:
        return None
    return set(available[-workers:]), set(available[:-workers])


def spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cpus: set[int] | None = None
) -> subprocess.Popen:
    """Start a server in its own session, stdout and stderr to `log`, on `cpus` if given.

    Its own session keeps a terminal's Ctrl-C away from it, so the harness stops
    everything itself, in order, from its `finally` blocks. The CPUs are set by
    taskset, which then execs the server: the pid is the server's, and every
    process it forks inherits them, with no window in which one does not.
    """
    if cpus is not None:
        argv = ["taskset", "--cpu-list", ",".join(map(str, sorted(cpus))), *argv]
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )


def http_status(port: int, host: str, path: str = "/", timeout: float = 1.0) -> int:
    """Status of one GET to 127.0.0.1:port with this Host header (0 if it failed)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def wait_ready(
    proc: subprocess.Popen, port: int, hosts: list[str], log: Path, timeout: float = 20.0
) -> None:
    """Wait until a GET with each Host header returns 200, or fail with the log's tail."""
    deadline = time.monotonic() + timeout
    pending = list(hosts)
    status = 0
    while pending and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{tail(log)}")
        status = http_status(port, pending[0])
        if status == 200:
            pending.pop(0)
        else:
            time.sleep(0.05)
    if pending:
        answer = f"last answer {status}" if status else "no answer"
        raise RuntimeError(
            f"no 200 for Host {pending[0]} on {LOOPBACK}:{port} after {timeout:g}s "
            f"({answer}):\n{tail(log)}"
        )


def tail(log: Path, lines: int = 15) -> str:
    """The last lines of a log file ("" if it cannot be read)."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM a server, wait, then SIGKILL whatever is left of its tree."""
    if proc.poll() is None:
        family = tree(proc.pid)
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        for p in family:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    # A root that exited on its own (a crash) leaves its children running, out of
    # reach of tree(): they are still in its session's process group (spawn), and
    # would load the machine for the rest of the run.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
