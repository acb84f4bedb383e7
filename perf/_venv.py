"""Run the perf scripts with the repository's virtualenv, wherever they are called from,
after installing what they need."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Set once `make perf-deps` has run for this process tree (by the Makefile's perf
#: and profile targets, which have it as a prerequisite, and before the re-exec).
DEPS_READY = "PORTSIDE_PERF_DEPS_READY"


def enter() -> None:
    """Install what is missing, then re-exec under .venv/bin/python when started by
    another interpreter.

    The harness imports portside (compiled), psutil and matplotlib, which live in the
    venv, and runs wrk, nginx and HAProxy: `perf/run` from a plain shell, on a fresh
    clone, must not fail for want of them, least of all at the end of a long run.
    """
    # --help must answer at once, without apt, pip or a compile that could fail first.
    if not os.environ.get(DEPS_READY) and not {"-h", "--help"} & set(sys.argv[1:]):
        _install()
        os.environ[DEPS_READY] = "1"
    venv_python = ROOT / ".venv" / "bin" / "python"
    if os.environ.get(DEPS_READY) and not venv_python.exists():
        # A dangling symlink (the interpreter the venv was made from is gone) looks
        # like no venv at all, and the imports would fail with a less useful message.
        sys.exit(f"perf: {venv_python} is missing or broken; remove .venv and run make perf")
    if venv_python.exists() and Path(sys.prefix).resolve() != venv_python.parent.parent.resolve():
        os.execv(str(venv_python), [str(venv_python), *sys.argv])
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def _install() -> None:
    """`make perf-deps`: the venv, the compiled worker, Debian's wrk, nginx and HAProxy,
    and the venv's matplotlib, locust and py-spy, each only if missing (under a second
    when nothing is). The Makefile is the one list of them. It acts on this checkout:
    it may pip-install into its .venv and rebuild worker/*.so when a source changed."""
    argv = ["make", "--no-print-directory", "-s", "-C", str(ROOT), "perf-deps"]
    try:
        code = subprocess.run(argv, check=False).returncode
    except FileNotFoundError:
        sys.exit("perf: `make` is missing (apt-get install make); it installs what perf/ needs")
    if code != 0:
        sys.exit(f"perf: `make perf-deps` failed (exit {code}), see above; nothing was measured")
