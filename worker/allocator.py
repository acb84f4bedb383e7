"""glibc malloc settings for a worker, so that body buffers are reused, not faulted in anew.

A worker receives request and response bodies in reads of up to 250 KB (uvloop's
read buffer), each a bytes object malloc serves and frees soon after. glibc moves
its mmap threshold as such blocks come and go (mallopt(3)), and from the order of
the first ones a worker settled in one of two states for its whole life: blocks
reused from the heap, or blocks mapped, or the top of the heap given back, for
every request and faulted in again. In the second, a 1 MiB upload cost 375 page
faults and twice the CPU (`perf/run --scenarios upload`: 738 against 1,683
requests/s in one run, about half the rounds). Fixed thresholds leave only the
first: blocks up to 1 MiB come from the heap, and the heap is given back only when
more than 4 MiB of it is free at the top, so a worker keeps at most that much
beyond what it uses.
"""

from __future__ import annotations

import ctypes

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20
TRIM_THRESHOLD = 4 << 20


def fix_malloc_thresholds() -> bool:
    """Set the thresholds for this process; False if the C library has no mallopt."""
    libc = ctypes.CDLL(None)
    mallopt = getattr(libc, "mallopt", None)  # glibc's; musl has none
    if mallopt is None:
        return False
    # mallopt returns 1 on success.
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and (
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )
