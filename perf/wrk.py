"""Running wrk against 127.0.0.1 and reading its report."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from perf.procs import LOOPBACK
from perf.scenarios import Scenario

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors (connect, read, write, timeout) + non-2xx/3xx answers
    output: str


def command(
    scenario: Scenario, port: int, duration: float, threads: int, script: Path | None
) -> list[str]:
    """The wrk command line for one run of a scenario."""
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{scenario.connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        # The 2 s default counts slow answers at 1,000 connections as errors.
        "--timeout",
        "10s",
        "-H",
        f"Host: {scenario.hosts()[0]}",
    ]
    for header in scenario.headers:
        argv += ["-H", header]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(f"http://{LOOPBACK}:{port}{scenario.path}")
    return argv


def run(argv: list[str], duration: float) -> WrkResult:
    """Run wrk (bounded by a timeout) and parse its report."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"wrk did not finish within {exc.timeout:.0f}s") from exc
    if done.returncode != 0 or "requests in" not in done.stdout:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return parse(done.stdout)


def parse(out: str) -> WrkResult:
    """Parse wrk's text report (run with --latency)."""

    def latency(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s|m)\b", out, re.MULTILINE)
        return float(match.group(1)) * _UNITS_MS[match.group(2)] if match else float("nan")

    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if requests is None or rps is None:
        raise RuntimeError(f"wrk printed no request count or rate:\n{out[-500:]}")
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    return WrkResult(
        float(rps.group(1)), latency("50"), latency("99"), int(requests.group(1)), errors, out
    )
