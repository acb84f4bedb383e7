"""Compiles the worker's request path with mypyc; everything else is in pyproject.toml.

The hot-path modules are ordinary, type-annotated Python. mypyc turns them
into C extensions that do the same thing with about 37% fewer instructions
per proxied request (perf/instructions.py), which is what brings the
worker's user CPU per request within reach of nginx's (issue 3). Without
mypyc or a C compiler the build warns and portside runs as pure Python.

mypyc names modules by their paths, and setuptools' package-dir maps
worker/ to portside.worker, so the sources are first copied to a
portside/{master,worker} tree under build/ and compiled from there.

PORTSIDE_COMPILE=no skips the compilation; PORTSIDE_COMPILE=required makes a
failed one an error (the Makefile's `compile` target) instead of a warning.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
#: The modules every proxied request runs through, compiled in this order.
HOT_PATH = (
    "headers",
    "balancer",
    "routing",
    "stats",
    "exchange",
    "upstream",
    "client",
    "runtime",
)
STAGE = ROOT / "build" / "mypyc"


def _stage_sources() -> Path:
    """A copy of master/ and worker/ laid out as the portside package mypyc expects."""
    tree = STAGE / "src"
    shutil.rmtree(tree, ignore_errors=True)
    for part in ("master", "worker"):
        target = tree / "portside" / part
        target.mkdir(parents=True)
        for source in (ROOT / part).glob("*.py"):
            shutil.copy2(source, target / source.name)
    return tree


def _compiled_extensions() -> list:
    """The hot path as mypyc extensions, or none (pure Python) if mypyc is missing."""
    mode = os.environ.get("PORTSIDE_COMPILE", "")
    if mode == "no":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if mode == "required":
            raise
        print("mypyc is not installed: portside's worker runs as pure Python", file=sys.stderr)
        return []
    tree = _stage_sources()
    here = os.getcwd()
    os.chdir(tree)  # mypy names modules relative to the directory it runs in
    try:
        extensions = mypycify(
            ["--ignore-missing-imports", "--explicit-package-bases", "--follow-imports=silent"]
            + [f"portside/worker/{name}.py" for name in HOT_PATH],
            opt_level="3",
            group_name="portside.worker._compiled",
            target_dir=str(STAGE / "c"),
        )
    finally:
        os.chdir(here)
    for extension in extensions:  # their C sources are under the absolute target_dir
        # Unless required, a failed C build must not fail the install: the .py
        # modules still work.
        extension.optional = mode != "required"
    return extensions


setup(ext_modules=_compiled_extensions())
