"""Logging setup shared by the master and its children.

Every line names the process role and pid, so the interleaved output of a
master, its discovery process and N workers on one stderr stays readable.
"""

from __future__ import annotations

import logging
import sys


def setup_logging(role: str, level: str = "INFO") -> None:
    """(Re)configure the root logger for this process; called again after fork."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s [{role} %(process)d] %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel("WARNING" if level == "WARN" else level)
