"""Name child processes, so `ps`, `top` and `ss -p` tell the master from its children."""

from __future__ import annotations

import ctypes

_PR_SET_NAME = 15  # prctl(2); the kernel keeps at most 15 bytes of the name


def set_process_name(name: str) -> None:
    """Set this process's comm name (what `ps -o comm` and `ss -p` show)."""
    # The process's own symbols include libc's: ctypes.util.find_library("c") would
    # import shutil, tempfile and random into the master, and so into every worker.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
