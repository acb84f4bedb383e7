"""Logging setup shared by the master and its children.

Every line names the process role and pid, so the interleaved output of a
master, its discovery process and N workers on one stream stays readable.
With `[log] filePath` every process appends to the file: O_APPEND makes each
record's single write land whole, so lines from different processes never
interleave mid-line.
"""

from __future__ import annotations

import logging
import sys


class ReopenableFileHandler(logging.FileHandler):
    """A file handler that can reopen its file by name, after logrotate moved it."""

    def reopen(self) -> None:
        """Close the file and open the path again (SIGUSR1)."""
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self.close()
            self.stream = self._open()


def setup_logging(role: str, level: str = "INFO", file_path: str | None = None) -> None:
    """(Re)configure the root logger for this process; called again after fork."""
    handler: logging.Handler
    if file_path is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = ReopenableFileHandler(file_path, encoding="utf-8")
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s.%(msecs)03d %(levelname)s [{role} %(process)d] %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel("WARNING" if level == "WARN" else level)


def reopen_logs() -> None:
    """Reopen this process's log file, if it writes to one (SIGUSR1, for logrotate)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopenableFileHandler):
            handler.reopen()
