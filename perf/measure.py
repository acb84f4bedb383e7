"""What a proxy costs: CPU time from /proc, and worker RSS sampled during a run."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# (pid, tid) -> (user ticks, system ticks)
CpuSnapshot = dict[tuple[int, int], tuple[int, int]]


def cpu_snapshot(pids: list[int]) -> CpuSnapshot:
    """User and system clock ticks of every thread of these processes."""
    snapshot: CpuSnapshot = {}
    for pid in pids:
        task_dir = f"/proc/{pid}/task"
        try:
            tids = os.listdir(task_dir)
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open(f"{task_dir}/{tid}/stat") as f:
                    # The command name may contain spaces and ')': split after the last ')'.
                    fields = f.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            # utime and stime are fields 14 and 15 of stat(5); fields[0] is field 3.
            snapshot[(pid, int(tid))] = (int(fields[11]), int(fields[12]))
    return snapshot


def cpu_seconds(before: CpuSnapshot, after: CpuSnapshot) -> tuple[float, float]:
    """(user, system) seconds spent between two snapshots.

    Threads are matched by (pid, tid), so a worker that was restarted in between
    counts from zero instead of making the sum negative. A thread that exited in
    between loses its time; a healthy proxy has none.
    """
    user = system = 0
    for key, (u, s) in after.items():
        u0, s0 = before.get(key, (0, 0))
        user += max(0, u - u0)
        system += max(0, s - s0)
    return user / CLK_TCK, system / CLK_TCK


def settle(pids: list[int], window: float = 0.1, limit: float = 2.0) -> None:
    """Wait until these processes spend no CPU time for `window` seconds (at most `limit`).

    /proc counts in clock ticks (10 ms), so a quiet window of 100 ms means less
    than a tick of work left over from what came before.
    """
    deadline = time.monotonic() + limit
    last = cpu_seconds({}, cpu_snapshot(pids))
    while time.monotonic() < deadline:
        time.sleep(window)
        now = cpu_seconds({}, cpu_snapshot(pids))
        if now == last:
            return
        last = now


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0


def max_rss(pids: list[int]) -> int:
    """The largest RSS among these processes."""
    return max((rss_bytes(pid) for pid in pids), default=0)


class RssSampler:
    """Samples the largest worker RSS every `interval` seconds in a thread.

    RSS peaks during the run and may fall afterwards, so one reading at the end
    would miss the peak. The thread only reads /proc; it is stopped (and joined)
    by `stop()`, which returns the peak in bytes.
    """

    def __init__(
        self, worker_pids: Callable[[], list[int]], interval: float = 0.1, limit: float = 900.0
    ) -> None:
        self._worker_pids = worker_pids
        self._interval = interval
        self._limit = limit  # seconds: the thread ends by itself if stop() never comes
        self._stopped = threading.Event()
        self._peak = 0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        """Start sampling in the background; returns self."""
        self._thread.start()
        return self

    def _run(self) -> None:
        pids = self._worker_pids()
        ticks = 0
        deadline = time.monotonic() + self._limit
        while not self._stopped.is_set() and time.monotonic() < deadline:
            # Re-read the worker list now and then, in case a worker was replaced.
            if ticks % 20 == 0:
                pids = self._worker_pids()
            self._peak = max(self._peak, max_rss(pids))
            ticks += 1
            self._stopped.wait(self._interval)

    def stop(self) -> int:
        self._stopped.set()
        self._thread.join(timeout=5)
        return self._peak


def machine_ticks() -> tuple[int, int]:
    """(busy, steal) clock ticks of the whole machine, from /proc/stat.

    busy counts user, nice and system time only: irq and softirq time is either
    charged to the interrupted process as well (and so already in its stime) or
    kept apart from every process, depending on the kernel; leaving it out keeps
    `busy - ours` honest either way.
    """
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system = int(fields[1]), int(fields[2]), int(fields[3])
    steal = int(fields[8]) if len(fields) > 8 else 0
    return user + nice + system, steal


def own_ticks() -> int:
    """This process's user and system ticks, plus those of its waited-for children (wrk)."""
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    return round(total * CLK_TCK)
