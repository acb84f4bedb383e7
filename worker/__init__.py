"""Worker side of portside: everything on the request path.

Some of these modules may be compiled with mypyc (setup.py). Python imports
a compiled module in preference to its source, so one built before its .py
was last edited would silently run the old code: that is refused here.
"""

from pathlib import Path


def refuse_stale_compiled_modules(directory: Path) -> None:
    """Raise ImportError if a compiled module in `directory` is older than its .py."""
    for compiled in directory.glob("*.so"):
        source = directory / (compiled.name.split(".", 1)[0] + ".py")
        if source.exists() and source.stat().st_mtime > compiled.stat().st_mtime:
            raise ImportError(
                f"{compiled} was built before {source.name} last changed: run `make compile`"
                " to rebuild it, or delete worker/*.so to run the worker as pure Python"
            )


refuse_stale_compiled_modules(Path(__file__).parent)
