"""Name child processes, so `ps`, `top` and `ss -p` tell the master from its children."""

from __future__ import annotations

import ctypes
import ctypes.util

_PR_SET_NAME = 15  # prctl(2); the kernel keeps at most 15 bytes of the name


def set_process_name(name: str) -> None:
    """Set this process's comm name (what `ps -o comm` and `ss -p` show)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
