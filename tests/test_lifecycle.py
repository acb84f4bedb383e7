"""Worker lifecycle under load: kills, graceful stops, memory limits and log reopening."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from datetime import datetime

import psutil
from conftest import Load, free_port, lb_config, request, wait_until
from test_reload import reload


def test_killed_worker_costs_only_its_own_connections(portside, whoami):
    proxy = portside(lb_config(whoami("a")), workers=2)
    loads = [
        Load(proxy.port, "whoami.localhost", threads=3, max_seconds=60),
        Load(proxy.port, "whoami.localhost", threads=2, max_seconds=60, keep_alive=True),
    ]
    try:
        wait_until(lambda: all(len(load.results) > 100 for load in loads))
        before = proxy.worker_pids()
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        wait_until(lambda: len(proxy.worker_pids()) == 2 and victim not in proxy.worker_pids())
        (successor,) = set(proxy.worker_pids()) - set(before)
        replaced_in = _logged_at(proxy.logs(), f"{successor}]", "serving") - killed
        served = sum(len(load.results) for load in loads)
        wait_until(lambda: sum(len(load.results) for load in loads) > served + 200)
    finally:
        for load in loads:
            load.stop()
    # At most the connections the victim held: one per load thread. Connections
    # still queued on its socket wait for the replacement and are served.
    errors = sum(len(load.errors) for load in loads)
    assert errors <= 5, [load.errors for load in loads]
    assert all({status for _, status, _ in load.results} == {200} for load in loads)
    assert replaced_in < 1.0
    print(f"replacement serving in {replaced_in * 1000:.0f} ms; {errors} failed requests")


def _logged_at(logs: str, *texts: str) -> float:
    """The wall-clock time of the first log line containing all of `texts`."""
    line = next(line for line in logs.splitlines() if all(t in line for t in texts))
    return datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def test_quit_keeps_accepting_for_the_grace_then_finishes_slow_requests(portside, whoami):
    proxy = portside(
        lb_config(whoami("a")),
        workers=2,
        extra_static='[lifeCycle]\nrequestAcceptGraceTimeout = "1s"\ngraceTimeOut = "10s"\n',
    )
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                request(proxy.port, "whoami.localhost", "/?sleep=4", timeout=20).status
            )
        )
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    wait_until(lambda: _backend_connections(proxy) >= 6)
    proxy.proc.send_signal(signal.SIGQUIT)
    quit_at = time.monotonic()
    # Within requestAcceptGraceTimeout new connections are still served ...
    assert proxy.get("whoami.localhost").status == 200
    assert time.monotonic() - quit_at < 1.0
    # ... after it, they are refused, while the slow requests go on.
    wait_until(lambda: _refused(proxy.port), timeout=5)
    assert any(t.is_alive() for t in threads)
    for t in threads:
        t.join(20)
    assert results == [200] * 6
    assert proxy.proc.wait(20) == 0


def _backend_connections(proxy) -> int:
    """Connections the workers hold to backends (requests in flight)."""
    count = 0
    for pid in proxy.worker_pids():
        for c in psutil.Process(pid).net_connections("tcp"):
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port != proxy.port:
                count += 1
    return count


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_worker_above_max_memory_is_replaced_without_failures(portside, whoami):
    proxy = portside(lb_config(whoami("a")), workers=1)
    load = Load(proxy.port, "whoami.localhost", threads=3, max_seconds=90, keep_alive=True)
    idle: list[socket.socket] = []
    try:
        # What a worker forked now uses once warm, measured on one: a reload
        # then sets the limit a little above it.
        reload(proxy, generation=2, slots=1)
        served = len(load.results)
        wait_until(lambda: len(load.results) > served + 300)
        (warm,) = proxy.worker_pids()
        rss = psutil.Process(warm).memory_info().rss
        proxy.worker_settings = f"maxMemory = {rss + (3 << 20)}"
        proxy.write_static()
        reload(proxy, generation=3, slots=1)
        (worker,) = proxy.worker_pids()
        # Idle client connections cost the worker a few KiB each: 2,000 push it over.
        for _ in range(2000):
            idle.append(socket.create_connection(("127.0.0.1", proxy.port)))
        wait_until(lambda: "above workers.maxMemory" in proxy.logs(), timeout=15)
        wait_until(lambda: proxy.worker_pids() and worker not in proxy.worker_pids(), timeout=15)
        served = len(load.results)
        wait_until(lambda: len(load.results) > served + 100)
    finally:
        load.stop()
        for sock in idle:
            sock.close()
    assert not load.errors, load.errors[:3]
    assert {status for _, status, _ in load.results} == {200}
    wait_until(lambda: not psutil.pid_exists(worker) or psutil.Process(worker).status() == "zombie")
    assert "below what a fresh worker uses" not in proxy.logs()


def test_usr1_reopens_the_log_file(portside, whoami, tmp_path):
    log_file = tmp_path / "portside-file.log"
    dead = f"http://127.0.0.1:{free_port()}"  # a refused backend makes the worker log
    proxy = portside(
        lb_config(whoami("a")) + lb_config(dead, host="dead.localhost", name="dead"),
        workers=2,
        extra_static=f'[log]\nfilePath = "{log_file}"\n',
    )
    wait_until(lambda: log_file.exists() and "serving" in log_file.read_text())
    rotated = tmp_path / "portside-file.log.1"
    os.rename(log_file, rotated)  # as logrotate does
    proxy.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: log_file.exists() and "log files reopened" in log_file.read_text())
    assert proxy.get("dead.localhost", "/after-usr1").status == 502
    proxy.write_dynamic(lb_config(whoami("b")))  # discovery logs the change
    wait_until(lambda: "GET /after-usr1" in log_file.read_text())
    wait_until(lambda: "file provider: configuration changed" in log_file.read_text())
    assert "after-usr1" not in rotated.read_text()
