"""Passive health on one backend's pool, driven directly on a real event loop.

A server is ejected after `maxFailedAttempts` consecutive failures, for the
failure window; one request then probes it. A server that has not answered yet
(a container still starting) is held out briefly at first: 0.1 s, doubling up
to the window. The end-to-end cases are in test_retries.py and
test_docker_provider.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from portside.worker.runtime import PassiveHealth
from portside.worker.upstream import FIRST_EJECTION, Dials, UpstreamPool

PASSIVE = PassiveHealth(max_failed_attempts=3, failure_window=1.0)


Check = Callable[[UpstreamPool, asyncio.AbstractEventLoop], None]


def _run(check: Check) -> None:
    """Call `check` with a fresh pool, on a running event loop."""

    async def main() -> None:
        check(UpstreamPool("127.0.0.1", 1, 4, Dials(1.0)), asyncio.get_running_loop())

    asyncio.run(main())


def _ejection(pool: UpstreamPool, loop: asyncio.AbstractEventLoop) -> float:
    """How long the failure just recorded holds the pool out (0 if it does not)."""
    before = loop.time()
    pool.record_failure(PASSIVE)
    return max(0.0, pool.ejected_until - before)


def _probe(pool: UpstreamPool, loop: asyncio.AbstractEventLoop) -> float:
    """Let the ejection run out and send the probe; return how long the others wait."""
    pool.ejected_until = loop.time()
    before = loop.time()
    assert pool.accepting()  # this request is the probe
    assert not pool.accepting()  # the others wait for its verdict
    return pool.ejected_until - before


def _probe_fails(pool: UpstreamPool, loop: asyncio.AbstractEventLoop) -> float:
    """Send a probe and fail it; return the ejection that follows."""
    _probe(pool, loop)
    return _ejection(pool, loop)


def test_a_server_that_never_answered_is_held_out_briefly_then_longer():
    def check(pool: UpstreamPool, loop: asyncio.AbstractEventLoop) -> None:
        assert [_ejection(pool, loop) for _ in range(2)] == [0.0, 0.0]
        assert _ejection(pool, loop) == pytest.approx(FIRST_EJECTION, abs=0.05)
        held = pool.ejected_until
        pool.record_failure(PASSIVE)  # a request sent before the ejection fails late
        assert pool.ejected_until == held
        windows = [_probe_fails(pool, loop) for _ in range(5)]
        assert windows == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0], abs=0.05)

    _run(check)


def test_a_probe_without_a_verdict_holds_a_new_server_out_only_briefly():
    def check(pool: UpstreamPool, loop: asyncio.AbstractEventLoop) -> None:
        for _ in range(3):
            pool.record_failure(PASSIVE)
        # The probe's client left, or it timed out: no verdict. The others wait for
        # the next early ejection (0.2 s), not the whole window.
        assert _probe(pool, loop) == pytest.approx(2 * FIRST_EJECTION, abs=0.05)
        pool.record_success()
        for _ in range(3):
            pool.record_failure(PASSIVE)
        assert _probe(pool, loop) == pytest.approx(PASSIVE.failure_window, abs=0.05)

    _run(check)


def test_once_a_server_has_answered_it_is_ejected_for_the_whole_window():
    def check(pool: UpstreamPool, loop: asyncio.AbstractEventLoop) -> None:
        pool.record_success()
        assert [_ejection(pool, loop) for _ in range(3)] == pytest.approx([0, 0, 1.0], abs=0.05)
        assert pool.ejected
        pool.ejected_until = loop.time()
        assert pool.accepting()
        pool.record_success()  # the probe answered
        assert not pool.ejected and pool.accepting()
        assert [_ejection(pool, loop) for _ in range(3)] == pytest.approx([0, 0, 1.0], abs=0.05)

    _run(check)
