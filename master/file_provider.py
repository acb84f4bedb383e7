"""The file provider: load the dynamic configuration file(s) and watch for changes.

Watching polls file metadata (inode, size, mtime) every 200 ms: cheap, works
on every filesystem and bind mount, and editors that save by renaming a new
file into place change the inode, so they are seen too. An invalid file is
reported with its file and key, and the last good configuration stays.
"""

from __future__ import annotations

import logging
import os

from portside.master.dynamic_config import DynamicConfig, load_file_provider
from portside.master.errors import ConfigError
from portside.master.static_config import FileProvider

log = logging.getLogger("portside.discovery")

POLL_INTERVAL = 0.2

Signature = tuple[tuple[str, int, int, int], ...]


class FileWatcher:
    """Reports the file provider's configuration whenever its files change."""

    def __init__(self, provider: FileProvider) -> None:
        self.provider = provider
        self._signature: Signature | None = None

    def _current_signature(self) -> Signature:
        if self.provider.filename is not None:
            paths = [self.provider.filename]
        else:
            directory = self.provider.directory or ""
            try:
                paths = sorted(
                    os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".toml")
                )
            except OSError:
                paths = []
        signature = []
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                signature.append((path, -1, -1, -1))
            else:
                signature.append((path, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(signature)

    def poll(self) -> tuple[bool, DynamicConfig | None]:
        """(changed, config): config is None when the changed files are invalid."""
        signature = self._current_signature()
        if signature == self._signature:
            return False, None
        self._signature = signature
        try:
            config = load_file_provider(self.provider)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("%s", problem)
            log.error("file provider: keeping the last valid configuration")
            return True, None
        return True, config
