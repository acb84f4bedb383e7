"""Run the perf scripts with the repository's virtualenv, wherever they are called from."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def enter() -> None:
    """Re-exec under .venv/bin/python when started by another interpreter.

    The harness imports portside, psutil and matplotlib, which live in the venv
    that `make perf` prepares; `perf/run` from a plain shell should work too.
    """
    venv_python = ROOT / ".venv" / "bin" / "python"
    if venv_python.exists() and Path(sys.prefix).resolve() != venv_python.parent.parent.resolve():
        os.execv(str(venv_python), [str(venv_python), *sys.argv])
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
