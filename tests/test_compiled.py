"""The mypyc build of the request path (setup.py): stale modules are refused, and a
worker runs the compiled modules when they are there."""

from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest
from conftest import lb_config

import portside.worker as worker_package
from portside.worker import refuse_stale_compiled_modules

SUFFIX = EXTENSION_SUFFIXES[0]  # .cpython-311-x86_64-linux-gnu.so here


def test_a_compiled_module_older_than_its_source_is_refused(tmp_path):
    source, compiled = tmp_path / "client.py", tmp_path / f"client{SUFFIX}"
    source.write_text("")
    compiled.write_bytes(b"")
    os.utime(compiled, (1_000_000, 1_000_000))
    with pytest.raises(ImportError, match=r"make compile"):
        refuse_stale_compiled_modules(tmp_path)
    os.utime(compiled)  # rebuilt: newer than its source
    refuse_stale_compiled_modules(tmp_path)
    # The shared runtime library has no source of its own.
    (tmp_path / f"_compiled__mypyc{SUFFIX}").write_bytes(b"")
    os.utime(tmp_path / f"_compiled__mypyc{SUFFIX}", (1_000_000, 1_000_000))
    refuse_stale_compiled_modules(tmp_path)


def test_workers_run_the_compiled_modules_when_built(portside, whoami):
    worker_dir = Path(worker_package.__file__).parent
    built = {p.name.split(".", 1)[0] for p in worker_dir.glob("*.so")}
    if not built:
        pytest.skip("the worker is not compiled here (no mypyc or gcc): pure Python")
    proxy = portside(lb_config(whoami("a")))
    assert proxy.get("whoami.localhost").status == 200
    (pid,) = proxy.worker_pids()
    maps = Path(f"/proc/{pid}/maps").read_text()
    loaded = {Path(line.split()[-1]).name.split(".", 1)[0] for line in maps.splitlines()}
    # One shared library holds the code of every compiled module; importing the
    # first of them (client) loads it, and the others are initialised from it.
    assert {"client", "_compiled__mypyc"} <= built & loaded
