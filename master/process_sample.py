"""A child's RSS and CPU use, read from /proc once a second.

psutil would do this, but the master's imports are every worker's memory
(workers are forks): importing psutil there cost each worker 0.76 MB of
objects it never uses. Two small files of proc(5) are all the master needs.
"""

from __future__ import annotations

import os
import time

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


class ProcessSampler:
    """Samples one process; its pid cannot be reused while it is our unreaped child."""

    def __init__(self, pid: int) -> None:
        self._statm = f"/proc/{pid}/statm"
        self._stat = f"/proc/{pid}/stat"
        self._last: tuple[float, float] | None = None  # (monotonic time, CPU seconds)

    def rss(self) -> int:
        """Resident set size in bytes (statm's second field, in pages)."""
        with open(self._statm, "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE

    def cpu_percent(self) -> float:
        """CPU use since the previous call, in percent of one core; 0.0 the first time."""
        with open(self._stat, "rb") as f:
            # The command name, in parentheses, may hold spaces: count fields after it.
            # utime and stime are fields 14 and 15, in clock ticks.
            fields = f.read().rpartition(b")")[2].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND
        now = time.monotonic()
        last, self._last = self._last, (now, cpu)
        if last is None or now <= last[0]:
            return 0.0
        return 100.0 * (cpu - last[1]) / (now - last[0])
