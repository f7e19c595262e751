"""File-system helpers shared by the writers of checkpoints, logs and caches."""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()


def default_file_mode() -> int:
    """The permission bits ``open()`` gives a new file: 0o666 minus the process umask.

    ``tempfile.mkstemp`` creates files as 0o600 whatever the umask; files written through a
    temporary file and renamed get this mode instead, like every other file a run writes.
    """
    with _lock:  # reading the umask means setting it; keep that window to one thread
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask
