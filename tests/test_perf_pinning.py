"""The benchmark gives the proxy under test CPUs of its own (perf/procs.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import wait_until

from perf import procs


def test_the_proxy_gets_the_last_cpus_and_the_load_the_others() -> None:
    available = sorted(os.sched_getaffinity(0))
    split = procs.cpu_split(1)
    if len(available) < 2:
        assert split is None
        return
    assert split is not None
    proxy, load = split
    assert proxy == {available[-1]}
    assert load == set(available[:-1])


def test_no_pinning_when_the_proxy_would_take_every_cpu() -> None:
    assert procs.cpu_split(len(os.sched_getaffinity(0))) is None


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_spawned_server_and_its_children_run_on_the_cpus_given(tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    # A shell that forks a child: both must be confined, the pid must be the shell's.
    proc = procs.spawn(["sh", "-c", "sleep 30 & wait"], tmp_path / "log", cpus={cpu})
    try:
        children = wait_until(lambda: procs.tree(proc.pid)[1:])
        for pid in (proc.pid, children[0].pid):
            assert os.sched_getaffinity(pid) == {cpu}
        assert Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"sh\0")
    finally:
        procs.stop(proc)
