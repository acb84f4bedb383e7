"""Profile one portside worker under the small-GET load with py-spy: `perf/profile --help`.

Starts the nginx backends and portside with one worker, drives it with wrk
(keep-alive, 50 connections), records the worker with py-spy, and writes a
flame graph (or a speedscope profile) under perf/results/. Needs ptrace rights
(root, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perf import _venv, backends, procs, proxies, wrk
from perf.scenarios import BY_NAME


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds recorded (15)")
    parser.add_argument("--rate", type=int, default=500, help="samples per second (500)")
    parser.add_argument("--format", choices=("flamegraph", "speedscope"), default="flamegraph")
    parser.add_argument(
        "--native",
        action="store_true",
        help="include C frames (uvloop...); always on when the worker is compiled",
    )
    parser.add_argument(
        "--nonblocking",
        action="store_true",
        help="do not pause the worker to sample it (less overhead, less exact)",
    )
    parser.add_argument("--output", type=Path, help="default perf/results/flame.svg or .json")
    return parser


def _worker_compiled() -> bool:
    """Whether the worker's request path is the mypyc build (setup.py)."""
    from portside.worker import client

    return not client.__file__.endswith(".py")


def _py_spy() -> str | None:
    local = _venv.ROOT / ".venv" / "bin" / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def main() -> int:
    """perf/profile: load one worker with wrk while py-spy samples it into a flame graph."""
    args = _parser().parse_args()
    py_spy = _py_spy()
    missing = [t for t, path in (("wrk", shutil.which("wrk")), ("py-spy", py_spy)) if not path]
    if missing or shutil.which("nginx") is None:
        print(f"missing {', '.join(missing) or 'nginx'}: run `make profile`", file=sys.stderr)
        return 2
    suffix = "svg" if args.format == "flamegraph" else "json"
    output = (args.output or _venv.ROOT / "perf" / "results" / f"flame.{suffix}").resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    procs.raise_nofile_limit()
    scenario = BY_NAME["keepalive"]

    with tempfile.TemporaryDirectory(prefix="portside-profile-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)  # nginx workers run as nobody
        load: subprocess.Popen | None = None
        back = backends.start(workdir)
        try:
            portside = proxies.start(
                "portside", workdir / "portside", back.ports, scenario.hosts(), 1
            )
            try:
                worker = portside.worker_pids()[0]
                wrk.run(wrk.command(scenario, portside.port, 2, 1, None), 2)  # warm-up
                # Load for the whole recording, with a margin on both sides.
                argv = wrk.command(scenario, portside.port, args.duration + 4, 1, None)
                load = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
                time.sleep(1)
                record = [py_spy, "record", "--pid", str(worker), "--rate", str(args.rate)]
                record += ["--format", args.format, "-o", str(output)]
                record += ["--duration", str(args.duration)]
                # Compiled with mypyc, the request path is C: without native frames
                # the whole profile would collapse into data_received.
                native = args.native or _worker_compiled()
                record += ["--native"] * native + ["--nonblocking"] * args.nonblocking
                print(" ".join(record))
                subprocess.run(record, check=True, timeout=args.duration + 60)
                out, _ = load.communicate(timeout=args.duration + 60)
                print(f"under load: {wrk.parse(out).rps:,.0f} req/s (wrk -c50, while sampled)")
            finally:
                procs.stop(portside.proc)
        finally:
            if load is not None and load.poll() is None:
                load.kill()
                load.wait(10)
            procs.stop(back.proc)
    print(f"profile written: {output}")
    return 0
