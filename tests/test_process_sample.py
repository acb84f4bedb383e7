"""The master's /proc sampler agrees with psutil on a real process."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest
from conftest import wait_until

from portside.master.process_sample import ProcessSampler


@pytest.fixture
def busy():
    """A child process that spins on the CPU and holds 50 MB."""
    proc = subprocess.Popen([sys.executable, "-c", "x = bytearray(50_000_000)\nwhile True: pass"])
    yield proc
    proc.kill()
    proc.wait()


def test_rss_matches_psutil(busy):
    process = psutil.Process(busy.pid)
    wait_until(lambda: process.memory_info().rss > 50_000_000)
    sampler = ProcessSampler(busy.pid)
    assert sampler.rss() == pytest.approx(process.memory_info().rss, rel=0.05)


def test_cpu_percent_is_zero_first_then_measures_use(busy):
    sampler = ProcessSampler(busy.pid)
    assert sampler.cpu_percent() == 0.0
    process = psutil.Process(busy.pid)
    start = sum(process.cpu_times()[:2])
    wait_until(lambda: sum(process.cpu_times()[:2]) > start + 0.2)
    assert 0 < sampler.cpu_percent() <= 100 * psutil.cpu_count()


def test_a_reaped_process_raises_oserror(busy):
    sampler = ProcessSampler(busy.pid)
    busy.kill()
    busy.wait()
    with pytest.raises(OSError):
        sampler.rss()
