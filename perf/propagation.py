"""How fast Docker changes reach the request path: `docker start` and `docker stop`.

- start: from `docker start` returning to the first 200 through portside;
- stop: from `docker stop` starting to the last request routed to that
  container (it must drain on Docker's `kill` event, not wait for `die`).

Each is measured `--runs` times (default 20) and reported as p50 and p99.
Needs a Docker daemon (`make docker-up`); the backend image is the test
suite's registry-free busybox image. Traffic goes to 127.0.0.1 and to the
benchmark's own containers on the Docker bridge only.

Usage: python perf/propagation.py [--runs 20]
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import free_port  # noqa: E402
from docker_support import backend_image, docker_client  # noqa: E402

HOST = "propagation.localhost"
LABELS = {
    "traefik.enable": "true",
    "traefik.http.routers.prop.rule": f"Host(`{HOST}`)",
    # a named service, so that several containers become servers of one service
    "traefik.http.services.prop.loadbalancer.server.port": "80",
    "portside-test": "1",
}
_POLL_DEADLINE = 10.0
#: In container names, so that a run never meets the leftovers of another.
_ME = os.getpid()


def get(port: int) -> tuple[int, str]:
    """One request on a fresh connection: (status, the answering container's Name)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": HOST})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
    finally:
        conn.close()
    name = next((line[6:] for line in body.splitlines() if line.startswith("Name: ")), "")
    return resp.status, name


def start_portside(tmp: Path) -> tuple[subprocess.Popen, int]:
    """portside with the Docker provider, answering on the returned port."""
    port = free_port()
    static = tmp / "static.toml"
    static.write_text(
        textwrap.dedent(
            f"""
            [entryPoints.web]
            address = "127.0.0.1:{port}"
            [workers]
            count = 2
            [log]
            level = "WARN"
            [providers.docker]
            exposedByDefault = false
            """
        )
    )
    proc = subprocess.Popen([sys.executable, "-m", "portside.master.cli", "--config", str(static)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            get(port)
            return proc, port
        except OSError:
            time.sleep(0.05)
    stop_portside(proc)
    raise RuntimeError("portside did not start")


def stop_portside(proc: subprocess.Popen) -> None:
    """SIGTERM portside and wait for it; SIGKILL it if it takes longer than 20 s."""
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure_start(client, image: str, port: int, run: int) -> float:
    """Seconds from `docker start` returning to the first 200 through portside."""
    container = client.containers.create(image, name=f"prop-start-{_ME}-{run}", labels=LABELS)
    try:
        container.start()
        started = time.monotonic()
        while time.monotonic() - started < _POLL_DEADLINE:
            if get(port)[0] == 200:
                return time.monotonic() - started
        raise RuntimeError("the route never became live")
    finally:
        container.remove(force=True)


def measure_stop(client, image: str, port: int, run: int) -> tuple[float, int]:
    """Seconds from `docker stop` starting to the last request routed to the
    container, and how many requests failed meanwhile (none should)."""
    anchor = client.containers.run(
        image,
        name=f"prop-anchor-{_ME}-{run}",
        labels=LABELS,
        environment={"WHOAMI_NAME": "anchor"},
        detach=True,
    )
    leaving = client.containers.run(
        image,
        name=f"prop-leaving-{_ME}-{run}",
        labels=LABELS,
        environment={"WHOAMI_NAME": "leaving"},
        detach=True,
    )
    try:
        deadline = time.monotonic() + _POLL_DEADLINE
        while get(port)[1] != "leaving":  # wait until both are in rotation
            if time.monotonic() > deadline:
                raise RuntimeError("the second container never joined")
        routed: list[float] = []  # request start times answered by "leaving"
        failed: list[float] = []  # request start times of requests without a 200
        done = threading.Event()

        def load() -> None:
            while not done.is_set():
                began = time.monotonic()
                try:
                    status, name = get(port)
                except OSError:
                    status, name = 0, ""
                if status != 200:
                    failed.append(began)
                elif name == "leaving":
                    routed.append(began)

        threads = [threading.Thread(target=load) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.2)  # traffic flowing to both before the stop
        stopping_at = time.monotonic()
        leaving.stop(timeout=2)  # busybox ignores TERM: it lives for the 2 s grace period
        done.set()
        for t in threads:
            t.join(10)
        after = [t - stopping_at for t in routed if t >= stopping_at]
        return max(after, default=0.0), len(failed)
    finally:
        for container in (anchor, leaving):
            container.remove(force=True)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0-1) of values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    """Measure both events --runs times and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("PORTSIDE_REQUIRE_DOCKER", "0")
    client = docker_client()
    image = backend_image(client)
    with tempfile.TemporaryDirectory() as tmpdir:
        proc, port = start_portside(Path(tmpdir))
        try:
            starts = [measure_start(client, image, port, i) for i in range(args.runs)]
            stopped = [measure_stop(client, image, port, i) for i in range(args.runs)]
        finally:
            stop_portside(proc)
    stops = [seconds for seconds, _ in stopped]
    failures = sum(n for _, n in stopped)
    print(f"\nDocker propagation through portside, {args.runs} runs each\n")
    print("| event | p50 ms | p99 ms | max ms | target |")
    print("|---|---|---|---|---|")
    for label, values, target in (
        ("`docker start` returned -> first 200", starts, "p50 ≤ 100, p99 ≤ 250"),
        ("`docker stop` began -> last request routed to it", stops, "drained on kill"),
    ):
        print(
            f"| {label} | {1000 * statistics.median(values):.0f} "
            f"| {1000 * percentile(values, 0.99):.0f} | {1000 * max(values):.0f} | {target} |"
        )
    print(f"\nRequests without a 200 while containers stopped: {failures}")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
